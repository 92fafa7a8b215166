"""The network with a tiny CLIP: missing images, score consistency, Thinc IO, config checks."""
import numpy
import pytest
import torch

from spacy_m3el.ml.model import NetCall, get_net
from spacy_m3el.registrations import build_attention_alignment_v1, build_clip_encoder_v1, build_m3el_v1

from ..util import TINY, color_image


def build(tiny_clip, **overrides):
    torch.manual_seed(0)
    encoder = build_clip_encoder_v1(name=tiny_clip, **TINY)
    model = build_m3el_v1(encoder, build_attention_alignment_v1(), hidden_width=16, image_width=16, **overrides)
    model.initialize()
    return model


def features(model, with_images=(True, False, True)):
    from PIL import Image

    texts = ["Jordan [SEP] scored again", "Kastrel [SEP] a city", "Velmora [SEP] a ship on the sea"]
    images = [Image.fromarray(color_image((40 * i, 90, 200))) if keep else None for i, keep in enumerate(with_images)]
    return get_net(model).encoder.featurize(texts, images)


def test_missing_image_masks_image_scores(tiny_clip):
    model = build(tiny_clip)
    mentions = model.predict(NetCall("encode", {"role": "mention", "features": features(model)}))
    entities = model.predict(NetCall("encode", {"role": "entity", "features": features(model, (True, True, True))}))
    index = numpy.arange(3)
    scores = model.predict(NetCall("score", {"mentions": mentions, "entities": entities, "mention_index": index, "entity_index": index}))
    for unit in ("image", "t2v", "v2t"):
        assert scores[f"{unit}.ok"].tolist() == [True, False, True]
    assert scores["score"][1] == pytest.approx(scores["text"][1])  # only the text unit counts without an image
    expected = numpy.mean([scores[u][0] for u in ("text", "image", "t2v", "v2t")])
    assert scores["score"][0] == pytest.approx(expected, rel=1e-5)


def test_score_matrix_agrees_with_pairs(tiny_clip):
    model = build(tiny_clip)
    net = get_net(model)
    with torch.no_grad():
        f = {k: torch.from_numpy(v) for k, v in features(model).items()}
        m, e = net.encode("mention", f), net.encode("entity", f)
        matrix = net.score_matrix(m, e)["score"]
        mi, ei = torch.tensor([2, 0, 1, 2]), torch.tensor([1, 2, 0, 2])
        pairs = net.score_pairs(m, e, mi, ei)["score"]
    torch.testing.assert_close(pairs, matrix[mi, ei], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("with_images", [(False, False, False), (True, True, True)])
def test_featurize_with_no_or_all_images(tiny_clip, with_images):
    model = build(tiny_clip)
    f = features(model, with_images)
    assert f["pixel_values"].shape[0] == sum(with_images)
    side = model.predict(NetCall("encode", {"role": "entity", "features": f}))
    assert side["has_image"].tolist() == list(with_images)
    assert all(numpy.isfinite(v).all() for v in side.values() if v.dtype != bool)


def test_loss_reaches_the_encoder_and_decreases(tiny_clip):
    from thinc.api import Adam

    model = build(tiny_clip)
    batch = {"mention_features": features(model), "entity_features": features(model, (True, True, False)), "labels": numpy.array([0, 1, 2])}
    optimizer = Adam(0.001)
    losses = []
    for _ in range(15):
        out, backprop = model.begin_update(NetCall("loss", batch))
        backprop(None)
        if not losses:
            grads = [p.grad for n, p in get_net(model).named_parameters() if n.startswith("encoder.clip.text_model")]
            assert any(g is not None and g.abs().sum() > 0 for g in grads)
        model.finish_update(optimizer)
        losses.append(float(out["loss"]))
    assert losses[-1] < losses[0]


def test_bytes_round_trip_is_bit_identical(tiny_clip, no_network):
    model = build(tiny_clip)
    call = NetCall("encode", {"role": "mention", "features": features(model)})
    before = model.predict(call)
    fresh = build_m3el_v1(build_clip_encoder_v1(name="not-loaded-from-here", **TINY), build_attention_alignment_v1(), hidden_width=16, image_width=16)
    fresh.from_bytes(model.to_bytes())
    after = fresh.predict(call)
    for key in before:
        numpy.testing.assert_array_equal(after[key], before[key])


def test_corrupt_or_mismatched_bytes_are_clear_errors(tiny_clip):
    model = build(tiny_clip)
    data = model.to_bytes()
    other = build_m3el_v1(build_clip_encoder_v1(name=tiny_clip, **TINY), build_attention_alignment_v1(), hidden_width=16, image_width=16, use_image_unit=False)
    with pytest.raises(ValueError, match="do not match the model built from the config"):
        other.from_bytes(data)


def test_checkpoint_width_mismatch_names_the_setting(tiny_clip):
    encoder = build_clip_encoder_v1(name=tiny_clip, text_width=512, vision_width=32, projection_dim=32)
    model = build_m3el_v1(encoder, build_attention_alignment_v1(), hidden_width=16, image_width=16)
    with pytest.raises(ValueError, match="text_width = 32"):
        model.initialize()
