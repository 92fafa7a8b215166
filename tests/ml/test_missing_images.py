"""Policies for mentions and entities without an image (ml/missing_images.py)."""

import copy

import pytest
import torch

from spacy_m3el.ml.encoder import CLIPEncoder
from spacy_m3el.ml.layers import AttentionAlignment
from spacy_m3el.ml.missing_images import MISSING_IMAGE_POLICIES
from spacy_m3el.ml.network import M3ELNet, UnitSwitches

from ..util import TINY as WIDTHS
from .test_network import TEXTS, features

IMAGE_UNITS = ("image", "t2v", "v2t")


@pytest.fixture(scope="module")
def encoder(clip_path):
    encoder = CLIPEncoder(clip_path, **WIDTHS)
    encoder.load_pretrained()
    return encoder


def make_net(encoder, policy, seed=0):
    torch.manual_seed(seed)
    net = M3ELNet(
        copy.deepcopy(encoder),
        AttentionAlignment,
        hidden_width=16,
        image_width=16,
        missing_images=policy,
    )
    return net.eval()


def scores_with_a_missing_image(net):
    with torch.no_grad():
        mentions = net.encode("mention", features(net.encoder, TEXTS[:2], (True, True)))
        entities = net.encode("entity", features(net.encoder, TEXTS, (True, True, False, True)))
        return net.score_matrix(mentions, entities)


def test_unknown_policy_is_a_clear_error(encoder):
    with pytest.raises(ValueError, match="missing_images policy 'blank'.*mask, black"):
        make_net(encoder, "blank")


@pytest.mark.parametrize("policy", ["black", "learned", "describe"])
def test_filling_policies_score_every_unit_for_image_less_entities(encoder, policy):
    scores = scores_with_a_missing_image(make_net(encoder, policy))
    for unit in IMAGE_UNITS:
        assert scores[f"{unit}.ok"].all()
    mean = torch.stack([scores[unit] for unit in ("text",) + IMAGE_UNITS]).mean(0)
    torch.testing.assert_close(scores["score"], mean)


def test_mask_scores_image_less_entities_by_the_text_unit(encoder):
    scores = scores_with_a_missing_image(make_net(encoder, "mask"))
    assert not scores["image.ok"][:, 2].any()
    torch.testing.assert_close(scores["score"][:, 2], scores["text"][:, 2])


def test_black_gives_the_features_of_an_all_black_image(encoder):
    from PIL import Image

    net = make_net(encoder, "black")
    black = Image.new("RGB", (40, 40))
    texts = TEXTS[:2]
    with torch.no_grad():
        filled = net.encode("entity", features(net.encoder, texts, (True, False)))
        raw = net.encoder.featurize(texts, [None, black])
        real = net.encode("entity", {k: torch.from_numpy(v) for k, v in raw.items()})
    for key in ("image.g", "cross.t2v", "cross.v2t"):
        torch.testing.assert_close(filled[key][1], real[key][1], atol=1e-5, rtol=1e-5)


def test_describe_uses_the_items_own_text_as_its_image_embedding(encoder):
    net = make_net(encoder, "describe")
    data = features(net.encoder, TEXTS[:3], (True, False, False))
    with torch.no_grad():
        out = net.encoder(**data)
        filled = net.missing_images(out, net.encoder)
    torch.testing.assert_close(filled.image_global[1:], out.text_global[1:])
    torch.testing.assert_close(filled.image_global[0], out.image_global[0])
    assert filled.has_image.all() and not out.has_image[1:].any()


def test_learned_embedding_is_trained(encoder):
    net = make_net(encoder, "learned").train()
    data = {
        "mention_features": features(net.encoder, TEXTS[:3], (True, True, True)),
        "entity_features": features(net.encoder, TEXTS, (True, False, True, False)),
        "labels": torch.tensor([0, 1, 2]),
    }
    net.loss(**data)["loss"].backward()
    assert net.missing_images.no_image_global.grad.abs().sum() > 0
    assert net.missing_images.no_image_token.grad.abs().sum() > 0


def test_contrastive_loss_never_uses_filled_images(encoder):
    """The image-side contrastive term is the same whatever a missing image is filled with."""
    data = {
        "mention_features": features(encoder, TEXTS[:3], (True, True, True)),
        "entity_features": features(encoder, TEXTS, (True, False, True, True)),
        "labels": torch.tensor([0, 1, 2]),
    }
    losses = []
    for policy in ("mask", "black", "learned"):
        net = make_net(encoder, policy)
        with torch.no_grad():
            losses.append(net.loss(**data)["loss.contrastive"])
    torch.testing.assert_close(losses[0], losses[1])
    torch.testing.assert_close(losses[0], losses[2])


def test_calibrated_puts_every_pair_on_one_scale(encoder):
    net = make_net(encoder, "calibrated")
    combine = net.combine
    with torch.no_grad():
        combine.scale.copy_(torch.tensor([2.0, 1.0, 1.0, 1.0]))
        combine.bias.copy_(torch.tensor([0.5, 0.0, 0.0, 0.0]))
        combine.absent.copy_(torch.tensor([0.0, -1.0, -2.0, -3.0]))
    scores = scores_with_a_missing_image(net)
    # Entity 2 has no image: the image units contribute their learned absent scores.
    expected = (2.0 * scores["text"][:, 2] + 0.5 - 6.0) / 4
    torch.testing.assert_close(scores["score"][:, 2], expected)
    with_image = (2.0 * scores["text"][:, 0] + 0.5 + sum(scores[u][:, 0] for u in IMAGE_UNITS)) / 4
    torch.testing.assert_close(scores["score"][:, 0], with_image)


def test_every_policy_trains_on_a_batch(encoder):
    for policy in MISSING_IMAGE_POLICIES:
        net = make_net(encoder, policy).train()
        data = {
            "mention_features": features(net.encoder, TEXTS[:3], (True, False, True)),
            "entity_features": features(net.encoder, TEXTS, (True, False, True, False)),
            "labels": torch.tensor([0, 1, 2]),
        }
        out = net.loss(**data)
        assert torch.isfinite(out["loss"]), policy
        out["loss"].backward()


def test_text_only_network_ignores_the_policy(encoder):
    torch.manual_seed(0)
    net = M3ELNet(
        copy.deepcopy(encoder),
        AttentionAlignment,
        hidden_width=16,
        image_width=16,
        units=UnitSwitches(image=False, t2v=False, v2t=False),
        missing_images="black",
    ).eval()
    with torch.no_grad():
        side = net.encode("entity", features(net.encoder, TEXTS[:2], (True, False)))
    assert side["has_image"].tolist() == [True, False]


def test_the_policy_is_part_of_the_entity_cache_fingerprint(encoder):
    from spacy_m3el.ml.model import M3ELModel

    mask, black = make_net(encoder, "mask"), make_net(encoder, "black")
    assert M3ELModel(mask).fingerprint() != M3ELModel(black).fingerprint()


@pytest.mark.parametrize("policy", MISSING_IMAGE_POLICIES)
def test_unit_columns_average_to_the_overall_score(encoder, policy):
    """What the linking decision weighs per unit: equal weights give the overall score,
    also where a unit cannot score the pair (mask) and with calibrated units."""
    net = make_net(encoder, policy)
    if policy == "calibrated":  # move the calibration away from its identity start
        with torch.no_grad():
            for parameter in (net.combine.scale, net.combine.bias, net.combine.absent):
                parameter.add_(torch.linspace(-0.5, 0.7, len(parameter)))
    with torch.no_grad():
        mentions = net.encode("mention", features(net.encoder, TEXTS[:2], (True, False)))
        entities = net.encode("entity", features(net.encoder, TEXTS, (True, True, False, True)))
        index = torch.arange(len(TEXTS)).expand(2, len(TEXTS))
        scores = net.score_candidates(mentions, entities, index, columns=True)
    assert scores["columns"].shape == (2, len(TEXTS), len(net.units.enabled))
    torch.testing.assert_close(scores["columns"].mean(-1), scores["score"])
