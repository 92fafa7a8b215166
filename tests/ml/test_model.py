"""The Thinc model from spacy_m3el.M3EL.v2: initialize, serialization, config checks, training."""

import numpy
import pytest
import srsly
import torch
from PIL import Image

from spacy_m3el.ml.model import TrainingBatch
from spacy_m3el.registrations import (
    build_attention_alignment_v1,
    build_clip_encoder_v1,
    build_m3el_v1,
)

from ..util import TINY as WIDTHS

TEXTS = [
    "player [SEP] scored points last night",
    "river [SEP] flows through the north",
    "band [SEP] album",
    "city [SEP] a capital",
]


def build(name, *, seed=0, widths=WIDTHS, **overrides):
    torch.manual_seed(seed)
    settings = dict(hidden_width=16, image_width=16)
    settings.update(overrides)
    return build_m3el_v1(
        build_clip_encoder_v1(name=name, **widths), build_attention_alignment_v1(), **settings
    )


def initialized(name, **kwargs):
    model = build(name, **kwargs)
    model.initialize()
    return model


def image(i):
    colors = [(220, 30, 30), (30, 30, 220), (30, 200, 30), (220, 200, 30)]
    rng = numpy.random.default_rng(i)
    array = numpy.full((40, 40, 3), colors[i % 4], dtype=numpy.int16) + rng.integers(
        -20, 21, (40, 40, 3)
    )
    return Image.fromarray(array.clip(0, 255).astype(numpy.uint8))


def features(model, texts, with_images):
    return model.net.encoder.featurize(
        texts, [image(i) if keep else None for i, keep in enumerate(with_images)]
    )


def loss_batch(model):
    return TrainingBatch(
        mention_features=features(model, TEXTS[:3], (True, False, True)),
        entity_features=features(model, TEXTS, (True, True, True, False)),
        labels=numpy.array([0, 1, 2]),
    )


def predictions(model, mention_features, entity_features):
    """encode (both roles) and score outputs through the model's methods."""
    mentions = model.encode_features("mention", mention_features)
    entities = model.encode_features("entity", entity_features)
    entity_index = numpy.array([[3, 0], [0, 1], [1, 2]])
    scores = model.score_candidates(mentions, entities, entity_index)
    return {"mention": mentions, "entity": entities, "score": scores}


def assert_bit_identical(a, b):
    assert a.keys() == b.keys()
    for part in a:
        assert a[part].keys() == b[part].keys()
        for key in a[part]:
            assert isinstance(a[part][key], numpy.ndarray)
            numpy.testing.assert_array_equal(b[part][key], a[part][key], err_msg=f"{part}/{key}")


def train_steps(model, n, optimizer=None):
    from thinc.api import Adam

    optimizer = optimizer or Adam(0.001)
    data = loss_batch(model)
    losses = []
    for _ in range(n):
        out, backprop = model.begin_update(data)
        backprop(None)
        model.finish_update(optimizer)
        losses.append(float(out["loss"]))
    return losses


# initialize ------------------------------------------------------------------


def test_initialize_loads_the_checkpoint(clip_path):
    from transformers import CLIPModel

    model = build(clip_path)
    net = model.net
    assert not net.encoder.is_loaded
    with pytest.raises(RuntimeError, match="initialize"):
        net.encoder.featurize(["x"], [None])
    model.initialize()
    assert net.encoder.is_loaded
    reference = CLIPModel.from_pretrained(clip_path).state_dict()
    loaded = net.encoder.clip.state_dict()
    assert loaded.keys() == reference.keys()
    for key, value in reference.items():
        assert torch.equal(loaded[key], value), key
    out = model.encode_features("mention", features(model, TEXTS[:2], (True, False)))
    assert out["has_image"].tolist() == [True, False]
    assert all(isinstance(value, numpy.ndarray) for value in out.values())


def test_initialize_from_a_local_folder_needs_no_network(clip_path, no_network):
    model = initialized(clip_path)
    assert model.net.encoder.is_loaded


@pytest.mark.parametrize("setting", ["hidden_width", "image_width", "contrastive_temperature"])
def test_non_positive_settings_are_rejected(clip_path, setting):
    with pytest.raises(ValueError, match=f"{setting} must be positive"):
        build(clip_path, **{setting: 0})


@pytest.mark.parametrize("setting", ["text_width", "vision_width", "projection_dim"])
def test_checkpoint_width_mismatch_names_the_setting(clip_path, setting):
    model = build(clip_path, widths=dict(WIDTHS, **{setting: 48}))
    with pytest.raises(ValueError, match=f"set {setting} = 32 in the encoder section"):
        model.initialize()


# Serialization -----------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(clip_path):
    """A model after two Adam steps (weights differ from the checkpoint), its bytes and outputs."""
    model = initialized(clip_path)
    train_steps(model, 2)
    m_feats = features(model, TEXTS[:3], (True, False, True))
    e_feats = features(model, TEXTS, (True, True, False, True))
    return {
        "model": model,
        "bytes": model.to_bytes(),
        "inputs": (m_feats, e_feats),
        "outputs": predictions(model, m_feats, e_feats),
    }


@pytest.mark.parametrize("name", ["same", "openai/clip-vit-base-patch32"])
def test_bytes_round_trip_is_bit_identical_and_offline(clip_path, trained, no_network, name):
    """A fresh model from the same config (or an unavailable hub checkpoint) loads the bytes."""
    fresh = build(clip_path if name == "same" else name, seed=1)
    assert not fresh.net.encoder.is_loaded
    fresh.from_bytes(trained["bytes"])
    assert_bit_identical(trained["outputs"], predictions(fresh, *trained["inputs"]))
    # The restored model's own bytes load again to the same outputs.
    again = build(clip_path, seed=2).from_bytes(fresh.to_bytes())
    assert_bit_identical(trained["outputs"], predictions(again, *trained["inputs"]))
    # Tokenizer and image processor are restored too.
    raw = trained["model"].layers[0].shims[0]._model.encoder.featurize(TEXTS, [image(0)] * 4)
    restored = fresh.net.encoder.featurize(TEXTS, [image(0)] * 4)
    for key in raw:
        numpy.testing.assert_array_equal(restored[key], raw[key])


def test_restored_model_keeps_training(clip_path, trained):
    fresh = build(clip_path, seed=1).from_bytes(trained["bytes"])
    losses = train_steps(fresh, 2)
    assert all(numpy.isfinite(losses))


def test_uninitialized_model_round_trips(clip_path):
    model = build(clip_path)
    fresh = build(clip_path, seed=1).from_bytes(model.to_bytes())
    assert not fresh.net.encoder.is_loaded
    for (key, value), other in zip(model.net.state_dict().items(), fresh.net.state_dict().values()):
        assert torch.equal(value, other), key


def replace_net_message(data, **changes):
    """The model bytes with fields of the network's message (version, encoder, state) replaced."""
    msg = srsly.msgpack_loads(data)
    shim = srsly.msgpack_loads(msg["shims"][1][0])
    if "shim_state" in changes:
        shim["state"] = changes.pop("shim_state")
    else:
        net_msg = srsly.msgpack_loads(shim["state"])
        for key, value in changes.items():
            if value is None:
                net_msg.pop(key)
            else:
                net_msg[key] = value(net_msg[key]) if callable(value) else value
        shim["state"] = srsly.msgpack_dumps(net_msg)
    msg["shims"][1][0] = srsly.msgpack_dumps(shim)
    return srsly.msgpack_dumps(msg)


def test_replace_net_message_round_trips(clip_path, trained):
    fresh = build(clip_path, seed=1).from_bytes(replace_net_message(trained["bytes"], version=1))
    assert_bit_identical(trained["outputs"], predictions(fresh, *trained["inputs"]))


@pytest.mark.parametrize(
    "corrupt,message",
    [
        (lambda data: b"not a model", None),
        (lambda data: data[: len(data) // 2], None),
        (lambda data: replace_net_message(data, shim_state=b"\x00garbage"), "corrupt"),
        (lambda data: replace_net_message(data, version=99), "unknown format"),
        pytest.param(
            lambda data: replace_net_message(data, state=lambda blob: blob[: len(blob) // 2]),
            "m3el_linker model data",
            id="truncated-weights",
        ),
        pytest.param(
            lambda data: replace_net_message(data, state=b"\x00" * 64),
            "m3el_linker model data",
            id="garbage-weights",
        ),
        pytest.param(
            lambda data: replace_net_message(data, encoder=None),
            "m3el_linker model data",
            id="missing-encoder-metadata",
        ),
    ],
)
def test_corrupt_bytes_are_a_value_error(clip_path, trained, corrupt, message):
    fresh = build(clip_path, seed=1)
    with pytest.raises(ValueError, match=message) as info:
        fresh.from_bytes(corrupt(trained["bytes"]))
    assert "torch" not in type(info.value).__module__


@pytest.mark.parametrize(
    "overrides,message",
    [
        (dict(use_image_unit=False), "do not match the model built from the config"),
        (
            dict(use_t2v_unit=False, use_v2t_unit=False),
            "do not match the model built from the config",
        ),
        (dict(use_text_unit=False), "do not match the model built from the config"),
        (dict(hidden_width=24), "in the model built from the config"),
        (dict(image_width=8), "in the model built from the config"),
        (dict(widths=dict(WIDTHS, text_width=48)), "text_width = 32"),
    ],
)
def test_bytes_from_a_different_config_are_a_clear_error(clip_path, trained, overrides, message):
    other = build(clip_path, **overrides)
    with pytest.raises(ValueError, match=message) as info:
        other.from_bytes(trained["bytes"])
    assert type(info.value) is ValueError


def test_rejected_bytes_leave_the_model_unchanged(clip_path, trained):
    model = build(clip_path).from_bytes(trained["bytes"])
    other = initialized(clip_path, use_image_unit=False)
    with pytest.raises(ValueError, match="do not match"):
        model.from_bytes(other.to_bytes())
    assert_bit_identical(trained["outputs"], predictions(model, *trained["inputs"]))


def test_config_changes_that_keep_the_weights_load(clip_path, trained):
    """Only the set of units and widths fixes the weights; loss settings may change."""
    other = build(
        clip_path, use_contrastive_loss=False, contrastive_temperature=0.1, csra_lambda=1.0
    )
    other.from_bytes(trained["bytes"])
    outputs = predictions(other, *trained["inputs"])
    numpy.testing.assert_array_equal(
        outputs["score"]["score"], trained["outputs"]["score"]["score"]
    )


# Training ----------------------------------------------------------------------


def test_training_updates_parameters_and_lowers_the_loss(clip_path):
    from thinc.api import Adam

    model = initialized(clip_path)
    net = model.net
    before = {key: value.detach().clone() for key, value in net.named_parameters()}
    optimizer = Adam(0.001)
    data = loss_batch(model)
    out, backprop = model.begin_update(data)
    assert isinstance(out["loss"], numpy.ndarray) and out["loss"].shape == ()
    assert out["score"].shape == (3, 4)
    assert {
        "loss.overall",
        "loss.text",
        "loss.image",
        "loss.t2v",
        "loss.v2t",
        "loss.contrastive",
    } <= set(out)
    backprop(None)
    grads = {
        key: p.grad.detach().clone() for key, p in net.named_parameters() if p.grad is not None
    }
    assert any(
        key.startswith("encoder.clip.text_model.") and g.abs().sum() > 0 for key, g in grads.items()
    )
    assert any(
        key.startswith("encoder.clip.vision_model.") and g.abs().sum() > 0
        for key, g in grads.items()
    )
    model.finish_update(optimizer)
    after = dict(net.named_parameters())
    moved = [key for key, value in before.items() if not torch.equal(after[key].detach(), value)]
    assert any(key.startswith("encoder.clip.") for key in moved)
    for prefix in ("text_unit.", "image_unit.", "cross_unit.", "image_global_fc."):
        assert any(key.startswith(prefix) for key in moved), prefix
    # Gradients are consumed by the update and do not leak into the next step.
    assert all(p.grad is None or not p.grad.any() for p in net.parameters())
    losses = [float(out["loss"])] + train_steps(model, 19, optimizer)
    assert all(numpy.isfinite(losses))
    assert losses[-1] < 0.5 * losses[0]
    assert numpy.mean(losses[-5:]) < numpy.mean(losses[:5])


def test_deterministic_torch_restores_the_setting():
    from spacy_m3el.ml.model import deterministic_torch

    assert not torch.are_deterministic_algorithms_enabled()
    with deterministic_torch():
        assert torch.are_deterministic_algorithms_enabled()
    assert not torch.are_deterministic_algorithms_enabled()


def test_predict_does_not_track_gradients_or_change_weights(clip_path):
    model = initialized(clip_path)
    net = model.net
    before = {key: value.clone() for key, value in net.state_dict().items()}
    m_feats, e_feats = (
        features(model, TEXTS[:3], (True, False, True)),
        features(model, TEXTS, (True,) * 4),
    )
    first = predictions(model, m_feats, e_feats)
    assert all(p.grad is None for p in net.parameters())
    assert_bit_identical(first, predictions(model, m_feats, e_feats))
    for key, value in net.state_dict().items():
        assert torch.equal(value, before[key]), key
