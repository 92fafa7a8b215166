"""M3ELNet with a tiny offline CLIP: ablations, missing images, scores, featurization."""

import copy

import numpy
import pytest
import torch
from PIL import Image
from torch.nn import functional as F

from spacy_m3el.ml.bi_encoder import RetrievalPart
from spacy_m3el.ml.layers import AttentionAlignment
from spacy_m3el.ml.network import M3ELNet, UnitSwitches

TEXTS = [
    "player [SEP] scored points last night",
    "river [SEP] flows through the north of the country",
    "band [SEP] album",
    "city [SEP] capital of the state with a museum and a bridge and a tower",
]
COLORS = [(220, 30, 30), (30, 30, 220), (30, 200, 30), (220, 200, 30)]


def make_net(encoder, seed=0, alignment=AttentionAlignment, **switches):
    torch.manual_seed(seed)
    return M3ELNet(
        copy.deepcopy(encoder),
        alignment,
        hidden_width=16,
        image_width=16,
        units=UnitSwitches(**switches),
    )


@pytest.fixture(scope="module")
def net(loaded_encoder):
    return make_net(loaded_encoder).eval()


def image(i):
    rng = numpy.random.default_rng(i)
    array = numpy.full((40, 40, 3), COLORS[i % len(COLORS)], dtype=numpy.int16) + rng.integers(
        -20, 21, (40, 40, 3)
    )
    return Image.fromarray(array.clip(0, 255).astype(numpy.uint8))


def features(encoder, texts, with_images):
    images = [image(i) if keep else None for i, keep in enumerate(with_images)]
    return {key: torch.from_numpy(value) for key, value in encoder.featurize(texts, images).items()}


def batch(encoder, mention_images=(True, True, True), entity_images=(True, True, True, True)):
    """3 mentions of entities 0, 1, 2; entity 3 is a hard negative."""
    return {
        "mention_features": features(encoder, TEXTS[:3], mention_images),
        "entity_features": features(encoder, TEXTS, entity_images),
        "labels": torch.tensor([0, 1, 2]),
    }


# Ablations -----------------------------------------------------------------

ALL_OFF = dict(text=False, image=False, t2v=False, v2t=False)
ABLATIONS = {
    "all_on": {},
    "text_only": dict(ALL_OFF, text=True),
    "image_only": dict(ALL_OFF, image=True),
    "t2v_only": dict(ALL_OFF, t2v=True),
    "v2t_only": dict(ALL_OFF, v2t=True),
    "no_contrastive": dict(contrastive=False),
    "image_only_no_contrastive": dict(ALL_OFF, image=True, contrastive=False),
}


def grad_norm(net, prefix):
    grads = [
        p.grad
        for name, p in net.named_parameters()
        if name.startswith(prefix) and p.grad is not None
    ]
    return float(sum(g.abs().sum() for g in grads)) if grads else 0.0


@pytest.mark.parametrize("name", list(ABLATIONS))
def test_ablation_builds_trains_and_reports_its_losses(loaded_encoder, name):
    switches = ABLATIONS[name]
    units = UnitSwitches(**switches)
    net = make_net(loaded_encoder, **switches)
    assert (net.text_unit is not None, net.image_unit is not None, net.cross_unit is not None) == (
        units.text,
        units.image,
        units.t2v or units.v2t,
    )
    out = net.loss(**batch(net.encoder))
    assert torch.isfinite(out["loss"]) and out["loss"].requires_grad
    expected = {"loss.overall"} | {f"loss.{unit}" for unit in units.enabled}
    if units.contrastive:
        expected.add("loss.contrastive")
    assert {key for key in out if key.startswith("loss.")} == expected
    assert set(out) == expected | {"loss", "score"}
    total = sum(out[key] for key in expected if key != "loss.contrastive")
    if units.contrastive:
        total = total + net.contrastive.weight * out["loss.contrastive"]
    torch.testing.assert_close(out["loss"].detach(), total)
    assert out["score"].shape == (3, 4)
    out["loss"].backward()
    uses_text = units.text or units.t2v or units.v2t or units.contrastive
    assert (grad_norm(net, "encoder.clip.text_model.") > 0) == uses_text
    assert (grad_norm(net, "encoder.clip.vision_model.") > 0) == units.needs_images
    assert grad_norm(net, "encoder.clip.") > 0


def test_all_units_off_is_an_error(loaded_encoder):
    with pytest.raises(ValueError, match="At least one matching unit"):
        make_net(loaded_encoder, **ALL_OFF)
    with pytest.raises(ValueError, match="At least one matching unit"):
        make_net(loaded_encoder, **ALL_OFF, contrastive=True)


@pytest.mark.parametrize("name", ["text_only", "image_only", "t2v_only", "v2t_only"])
def test_ablation_side_has_only_the_enabled_features(loaded_encoder, name):
    net = make_net(loaded_encoder, **ABLATIONS[name]).eval()
    units = net.units
    with torch.no_grad():
        f = features(net.encoder, TEXTS[:2], (True, False))
        side = net.encode("mention", f)
        scores = net.score_matrix(side, net.encode("entity", f))
    prefixes = {key.split(".")[0] for key in side if key != "has_image"}
    expected = {unit for unit in ("text", "image") if getattr(units, unit)}
    if units.t2v or units.v2t:
        expected.add("cross")
    if not units.text:
        expected.add("retrieval")
    assert prefixes == expected
    assert set(scores) == {"score"} | set(units.enabled) | {f"{unit}.ok" for unit in units.enabled}


# Missing images --------------------------------------------------------------


def test_missing_mention_image_masks_the_image_units(net):
    with torch.no_grad():
        mentions = net.encode("mention", features(net.encoder, TEXTS[:3], (True, False, True)))
        entities = net.encode("entity", features(net.encoder, TEXTS, (True, True, False, True)))
        scores = net.score_matrix(mentions, entities)
    expected_ok = torch.tensor([[True, True, False, True], [False] * 4, [True, True, False, True]])
    for unit in ("image", "t2v", "v2t"):
        assert torch.equal(scores[f"{unit}.ok"], expected_ok)
    assert scores["text.ok"].all()
    assert torch.equal(
        scores["score"][1], scores["text"][1]
    )  # mention without image: text unit only
    assert torch.equal(
        scores["score"][:, 2], scores["text"][:, 2]
    )  # entity without image: text unit only
    mean_all = torch.stack([scores[unit] for unit in ("text", "image", "t2v", "v2t")]).mean(0)
    torch.testing.assert_close(scores["score"][expected_ok], mean_all[expected_ok])


def test_image_unit_losses_ignore_pairs_without_images(loaded_encoder):
    net = make_net(loaded_encoder).eval()
    mention_images, entity_images = (True, False, True), (True, True, False, True)
    labels = torch.tensor([0, 1, 3])
    data = batch(net.encoder, mention_images, entity_images)
    data["labels"] = labels
    with torch.no_grad():
        out = net.loss(**data)
        scores = net.score_matrix(
            net.encode("mention", data["mention_features"]),
            net.encode("entity", data["entity_features"]),
        )
    torch.testing.assert_close(out["loss.overall"], F.cross_entropy(scores["score"], labels))
    torch.testing.assert_close(out["loss.text"], F.cross_entropy(scores["text"], labels))
    # Image units: only mentions 0 and 2 (with an image) against entities 0, 1, 3 (with an image).
    rows, columns = torch.tensor([0, 2]), torch.tensor([0, 1, 3])
    for unit in ("image", "t2v", "v2t"):
        expected = F.cross_entropy(scores[unit][rows][:, columns], torch.tensor([0, 2]))
        torch.testing.assert_close(out[f"loss.{unit}"], expected, atol=1e-5, rtol=1e-5)


def test_image_unit_losses_are_left_out_when_no_pair_has_images(loaded_encoder):
    net = make_net(loaded_encoder)
    out = net.loss(**batch(net.encoder, mention_images=(False, False, False)))
    assert {key for key in out if key.startswith("loss.")} == {
        "loss.overall",
        "loss.text",
        "loss.contrastive",
    }
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    assert grad_norm(net, "encoder.clip.text_model.") > 0


# Scores ----------------------------------------------------------------------


def test_scoring_candidates_agrees_with_the_score_matrix(net):
    """Any candidates per mention (repeated, in any order) score as in the all-pairs matrix."""
    with torch.no_grad():
        mentions = net.encode("mention", features(net.encoder, TEXTS[:3], (True, False, True)))
        entities = net.encode("entity", features(net.encoder, TEXTS, (True, True, False, True)))
        matrix = net.score_matrix(mentions, entities)
        entity_index = torch.tensor([[1, 3, 3], [0, 2, 1], [2, 0, 3]])
        candidates = net.score_candidates(mentions, entities, entity_index)
        forward = net(
            M3ELNet.score_candidates,
            mentions=mentions,
            entities=entities,
            entity_index=entity_index,
        )
    assert (
        set(candidates)
        == set(matrix)
        == {"score", "text", "image", "t2v", "v2t", "text.ok", "image.ok", "t2v.ok", "v2t.ok"}
    )
    for key, value in candidates.items():
        assert value.shape == (3, 3)
        assert matrix[key].shape == (3, 4)
        torch.testing.assert_close(value, matrix[key].gather(1, entity_index), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(forward[key], value)


def gathered_matrix(net, mentions, entities):
    """All-pairs scores computed through an explicit index (a gathered copy of the entities)."""
    n, n_entities = len(mentions["has_image"]), len(entities["has_image"])
    return net.score_candidates(mentions, entities, torch.arange(n_entities).expand(n, n_entities))


def assert_all_pairs_match_gathered_scores_and_gradients(net, encoder):
    """The loss's all-pairs path (no entity index) gives the scores and gradients of the
    same pairs scored through an explicit index."""
    inputs = batch(encoder, (True, False, True))
    results = []
    for score in (net.score_matrix, lambda m, e: gathered_matrix(net, m, e)):
        net.zero_grad()
        mentions = net.encode("mention", inputs["mention_features"])
        entities = net.encode("entity", inputs["entity_features"])
        scores = score(mentions, entities)
        F.cross_entropy(scores["score"], inputs["labels"]).backward()
        grads = {k: p.grad.clone() for k, p in net.named_parameters() if p.grad is not None}
        results.append(({k: v.detach() for k, v in scores.items()}, grads))
    (outer, outer_grads), (gathered, gathered_grads) = results
    for key, value in gathered.items():
        torch.testing.assert_close(outer[key], value, atol=1e-5, rtol=1e-5)
    assert outer_grads.keys() == gathered_grads.keys()
    for key, value in gathered_grads.items():
        torch.testing.assert_close(outer_grads[key], value, atol=1e-5, rtol=1e-4)


def test_all_pairs_scores_and_gradients_equal_the_gathered_ones(loaded_encoder):
    net = make_net(loaded_encoder)
    assert_all_pairs_match_gathered_scores_and_gradients(net, net.encoder)


def test_scores_do_not_depend_on_batch_padding(net):
    """A short mention scores the same alone and in a batch with a longer text (more padding)."""
    with torch.no_grad():
        entities = net.encode("entity", features(net.encoder, TEXTS, (True,) * 4))
        alone = net.encode("mention", features(net.encoder, TEXTS[2:3], (True,)))
        in_batch = net.encode("mention", features(net.encoder, [TEXTS[2], TEXTS[3]], (True, True)))
        assert in_batch["text.k"].shape[1] > alone["text.k"].shape[1]
        a = net.score_matrix(alone, entities)
        b = net.score_matrix(in_batch, entities)
    for key in ("score", "text", "image", "t2v", "v2t"):
        torch.testing.assert_close(b[key][0], a[key][0], atol=1e-5, rtol=1e-5)


def test_forward_rejects_unknown_task_and_role(net):
    with pytest.raises(ValueError, match="Unknown task"):
        net("train")
    with pytest.raises(ValueError, match="role"):
        net.encode("kb", features(net.encoder, TEXTS[:1], (False,)))


# Encoder -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "with_images", [(False, False, False), (True, True, True), (False, True, False)]
)
def test_encoder_featurizes_batches_with_none_some_or_all_images(loaded_encoder, with_images):
    encoder = loaded_encoder
    raw = encoder.featurize(
        TEXTS[:3], [image(i) if keep else None for i, keep in enumerate(with_images)]
    )
    n_images = sum(with_images)
    assert (
        raw["pixel_values"].shape == (n_images, 3, 32, 32)
        and raw["pixel_values"].dtype == numpy.float32
    )
    assert raw["has_image"].tolist() == list(with_images)
    assert raw["input_ids"].shape == raw["attention_mask"].shape and raw["input_ids"].shape[0] == 3
    with torch.no_grad():
        out = encoder(**{key: torch.from_numpy(value) for key, value in raw.items()})
    assert out.text_global.shape == (3, 32) and out.image_global.shape == (3, 32)
    assert out.text_tokens.shape == (3, raw["input_ids"].shape[1], 32)
    assert out.image_tokens.shape == (3, 17, 32)  # CLS + (32 / 8) ** 2 patches
    assert torch.equal(out.text_mask, torch.from_numpy(raw["attention_mask"]).bool())
    assert out.has_image.tolist() == list(with_images)
    has = out.has_image
    torch.testing.assert_close(out.text_global.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(out.image_global[has].norm(dim=-1), torch.ones(n_images))
    assert not out.image_global[~has].any() and not out.image_tokens[~has].any()
    for value in (out.text_global, out.text_tokens, out.image_global, out.image_tokens):
        assert torch.isfinite(value).all()
    if n_images:
        # Each image lands on its own item, whatever the other items hold.
        with torch.no_grad():
            all_images = encoder(**features(encoder, TEXTS[:3], (True, True, True)))
        torch.testing.assert_close(
            out.image_global[has], all_images.image_global[has], atol=1e-5, rtol=1e-5
        )
        torch.testing.assert_close(
            out.image_tokens[has], all_images.image_tokens[has], atol=1e-5, rtol=1e-5
        )


def test_encoder_truncates_long_texts_and_keeps_the_end_token(loaded_encoder):
    raw = loaded_encoder.featurize(["player " * 100, "band"], [None, None])
    eos = loaded_encoder.tokenizer.eos_token_id
    assert raw["input_ids"].shape == (2, 40)
    assert raw["input_ids"][0, -1] == eos and raw["attention_mask"][0].all()
    assert raw["attention_mask"][1].sum() == 3  # start, "band", end; the rest is padding


@pytest.mark.parametrize("with_images", [(False, False), (True, True)])
def test_network_encodes_batches_with_no_or_all_images(net, with_images):
    with torch.no_grad():
        f = features(net.encoder, TEXTS[:2], with_images)
        side = net.encode("entity", f)
        scores = net.score_matrix(net.encode("mention", f), side)
    assert side["has_image"].tolist() == list(with_images)
    for key, value in list(side.items()) + list(scores.items()):
        if value.dtype != torch.bool:
            assert torch.isfinite(value).all(), key
    assert scores["image.ok"].all() == all(with_images)


# Retrieval --------------------------------------------------------------------


def _numpy(side):
    return {key: value.numpy() for key, value in side.items()}


@pytest.mark.parametrize("mention_images", [(True, False, True), (False, False, False)])
def test_retrieval_vectors_give_the_bi_encoder_part_of_the_score(net, mention_images):
    """Stage 1's dot products are exactly the dot-product terms of the score, pair by pair."""
    with torch.no_grad():
        mentions = net.encode("mention", features(net.encoder, TEXTS[:3], mention_images))
        entities = net.encode("entity", features(net.encoder, TEXTS, (True, True, False, True)))
        every = torch.arange(4).expand(3, 4)
        expected = net.bi_encoder_score(mentions, entities, every).numpy()
    spec = net.retrieval_spec
    got = spec.vectors(_numpy(mentions), query=True) @ spec.vectors(_numpy(entities)).T
    numpy.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert all(part.in_score for part in spec.parts)


def test_score_is_the_bi_encoder_part_plus_the_late_interaction(net):
    """The terms retrieval uses are the ones the score adds up (no second copy of the formula)."""
    with torch.no_grad():
        mentions = net.encode("mention", features(net.encoder, TEXTS[:2], (True, True)))
        entities = net.encode("entity", features(net.encoder, TEXTS, (True,) * 4))
        every = torch.arange(4).expand(2, 4)
        scores = net.score_candidates(mentions, entities, every)
        bi_encoder = net.bi_encoder_score(mentions, entities, every)
        late = (
            net.text_unit.score_parts(
                {k[5:]: v for k, v in mentions.items() if k.startswith("text.")},
                {k[5:]: v for k, v in entities.items() if k.startswith("text.")},
                every,
            )[1]
            + net.image_unit.score_parts(
                {k[6:]: v for k, v in mentions.items() if k.startswith("image.")},
                {k[6:]: v for k, v in entities.items() if k.startswith("image.")},
                every,
            )[1]
        )
    # Every pair has both images, so all four units count and the score is their mean.
    torch.testing.assert_close(scores["score"], (bi_encoder + late) / 4, rtol=1e-5, atol=1e-6)


def test_retrieval_spec_follows_the_units(loaded_encoder):
    full = make_net(loaded_encoder).retrieval_spec
    assert [(p.key, p.weight, p.needs_image) for p in full.parts] == [
        ("text.g", 0.5, False),
        ("image.g", 0.5, True),
        ("cross.t2v", 1.0, True),
        ("cross.v2t", 1.0, True),
    ]
    text_off = make_net(loaded_encoder, text=False).retrieval_spec
    assert [(p.key, p.in_score) for p in text_off.parts][0] == ("retrieval.text", False)
    image_only = make_net(loaded_encoder, text=True, image=False, t2v=False, v2t=False)
    assert [p.key for p in image_only.retrieval_spec.parts] == ["text.g"]


def test_encoder_tokenizes_as_the_padded_tokenizer_call_and_caches_texts(loaded_encoder):
    encoder = copy.deepcopy(loaded_encoder)
    encoder._token_ids.clear()
    texts = [TEXTS[3] * 5, TEXTS[0], "", TEXTS[0], TEXTS[2]]
    settings = dict(padding="longest", truncation=True, return_tensors="np")
    expected = encoder.tokenizer(texts, max_length=encoder.max_length, **settings)
    for _ in range(2):  # the second call reads the cache
        input_ids, attention_mask = encoder.tokenize(texts)
        numpy.testing.assert_array_equal(input_ids, expected["input_ids"])
        numpy.testing.assert_array_equal(attention_mask, expected["attention_mask"])
    assert set(encoder._token_ids) == set(texts)


def test_i2t_unit_scores_the_mention_image_against_the_entity_text(loaded_encoder):
    """The i2t unit is a dot product in CLIP's joint space: the mention's image vector
    (normalised) against the entity's text vector, and stage 1 retrieves by it exactly."""
    net = make_net(loaded_encoder, t2v=False, v2t=False, late_interaction=False, i2t=True).eval()
    assert net.units.enabled == ("text", "image", "i2t")
    assert net.retrieval_spec.parts[-1] == RetrievalPart("i2t", 1.0, needs_image=True)
    with torch.no_grad():
        m_feats = features(net.encoder, TEXTS[:3], (True, True, True))
        mentions = net.encode("mention", m_feats)
        entities = net.encode("entity", features(net.encoder, TEXTS, (True,) * 4))
        scores = net.score_matrix(mentions, entities)
        out = net.encoder(**m_feats)
        image = net.norm_image_joint(out.image_global)
        text = entities["text.g"]
    torch.testing.assert_close(scores["i2t"], image @ text.T)
    torch.testing.assert_close(mentions["i2t"], image)
    expected = (scores["text"] + scores["image"] + scores["i2t"]) / 3
    torch.testing.assert_close(scores["score"], expected)
    spec = net.retrieval_spec
    got = spec.vectors(_numpy(mentions), query=True) @ spec.vectors(_numpy(entities)).T
    numpy.testing.assert_allclose(got, (3 * expected).numpy(), rtol=1e-5, atol=1e-5)
    losses = net.loss(**batch(net.encoder))
    assert "loss.i2t" in losses and bool(torch.isfinite(losses["loss"]))


def test_column_bias_shifts_each_entity_columns_logits_in_the_loss(net):
    """The loss is the cross-entropy of score + bias per column: a constant bias changes
    nothing, a bias on the gold columns lowers it; the returned scores never include it."""
    inputs = batch(net.encoder)
    with torch.no_grad():
        plain = net.loss(**inputs)
        shifted = net.loss(**inputs, column_bias=torch.full((4,), 3.0))
        gold_up = net.loss(**inputs, column_bias=torch.tensor([2.0, 2.0, 2.0, 0.0]))
    torch.testing.assert_close(shifted["loss.overall"], plain["loss.overall"])
    assert float(gold_up["loss.overall"]) < float(plain["loss.overall"])
    assert float(gold_up["loss.text"]) < float(plain["loss.text"])
    torch.testing.assert_close(gold_up["score"], plain["score"])


def test_frequency_bias_is_the_weighted_log_of_one_plus_the_count():
    import math

    from spacy_m3el.ml.losses import frequency_bias

    assert frequency_bias({"Q1": 3}, 2.0, "Q1") == 2.0 * math.log(4)
    assert frequency_bias({"Q1": 3}, 2.0, "Q9") == 0.0
