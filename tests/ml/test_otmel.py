"""M3ELNet with OT-MEL's pieces: OT alignment in every slot, the fusion unit,
distillation into a student attention, and the dual-encoder baseline."""

import pytest
import torch

from spacy_m3el.ml import transport
from spacy_m3el.ml.transport import OTSettings, ot_alignment

from .test_network import (
    TEXTS,
    _numpy,
    assert_all_pairs_match_gathered_scores_and_gradients,
    batch,
    features,
    grad_norm,
    make_net,
)

OTMEL_UNITS = dict(t2v=False, v2t=False, fusion=True)
DISTIL = OTSettings(distillation_weight=0.5, iterations=3)
DEFAULT = OTSettings()


def ot_net(encoder, settings=DEFAULT, **switches):
    return make_net(encoder, alignment=ot_alignment(settings), **switches)


@pytest.mark.parametrize(
    "switches",
    [OTMEL_UNITS, {}, dict(text=False, image=False, t2v=False, v2t=False, fusion=True)],
    ids=["otmel", "m3el_units", "fusion_only"],
)
def test_ot_network_trains_in_every_slot(loaded_encoder, switches):
    net = ot_net(loaded_encoder, **switches)
    out = net.loss(**batch(net.encoder))
    expected = {"loss.overall"} | {f"loss.{u}" for u in net.units.enabled} | {"loss.contrastive"}
    assert {key for key in out if key.startswith("loss.")} == expected
    out["loss"].backward()
    assert grad_norm(net, "encoder.clip.vision_model.") > 0
    if net.fusion_unit is not None:
        assert grad_norm(net, "fusion_unit.text_proj") > 0
        assert grad_norm(net, "fusion_unit.image_proj") > 0


def test_distillation_trains_the_students_and_is_part_of_the_loss(loaded_encoder):
    net = ot_net(loaded_encoder, DISTIL, **OTMEL_UNITS)
    out = net.loss(**batch(net.encoder))
    assert float(out["loss.distillation"]) > 0
    parts = sum(value for key, value in out.items() if key.startswith("loss."))
    torch.testing.assert_close(out["loss"].detach(), parts)
    out["loss"].backward()
    students = [name for name, _ in net.named_parameters() if ".student." in name]
    # text and image units' G2L plus the fusion unit's two directions each have a student
    assert len({name.split(".student.")[0] for name in students}) == 4
    assert all(grad_norm(net, name) > 0 for name in students)


def test_a_student_network_scores_without_sinkhorn(loaded_encoder, monkeypatch):
    settings = OTSettings(distillation_weight=0.5, predict_with="student")
    net = ot_net(loaded_encoder, settings, **OTMEL_UNITS).eval()
    monkeypatch.setattr(transport, "log_sinkhorn", lambda *a, **k: pytest.fail("Sinkhorn ran"))
    with torch.no_grad():
        f = features(net.encoder, TEXTS, (True, False, True, True))
        scores = net.score_matrix(net.encode("mention", f), net.encode("entity", f))
    assert torch.isfinite(scores["score"]).all() and scores["fusion"].shape == (4, 4)


@pytest.mark.parametrize(
    "switches", [OTMEL_UNITS, dict(t2v=False, v2t=False, late_interaction=False)]
)
def test_retrieval_vectors_give_the_bi_encoder_part_of_the_score(loaded_encoder, switches):
    net = ot_net(loaded_encoder, **switches).eval()
    with torch.no_grad():
        mentions = net.encode("mention", features(net.encoder, TEXTS[:3], (True, False, True)))
        entities = net.encode("entity", features(net.encoder, TEXTS, (True, True, False, True)))
        every = torch.arange(4).expand(3, 4)
        expected = net.bi_encoder_score(mentions, entities, every).numpy()
    spec = net.retrieval_spec
    got = spec.vectors(_numpy(mentions), query=True) @ spec.vectors(_numpy(entities)).T
    torch.testing.assert_close(
        torch.from_numpy(got), torch.from_numpy(expected), rtol=1e-5, atol=1e-5
    )


def test_the_dual_encoder_is_its_global_vectors_only(loaded_encoder):
    net = make_net(loaded_encoder, t2v=False, v2t=False, late_interaction=False).eval()
    assert [(p.key, p.weight) for p in net.retrieval_spec.parts] == [
        ("text.g", 1.0),
        ("image.g", 1.0),
    ]
    with torch.no_grad():
        f = features(net.encoder, TEXTS, (True,) * 4)
        mentions, entities = net.encode("mention", f), net.encode("entity", f)
        scores = net.score_matrix(mentions, entities)
        every = torch.arange(4).expand(4, 4)
        bi_encoder = net.bi_encoder_score(mentions, entities, every)
    torch.testing.assert_close(scores["score"], bi_encoder / 2)
    torch.testing.assert_close(scores["text"], mentions["text.g"] @ entities["text.g"].T)
    # No token-level parameters, and entity sides (what the cache stores) hold no tokens.
    assert not any(
        name.startswith(("text_unit.", "image_unit.")) for name, _ in net.named_parameters()
    )
    assert {key for key in entities if key.startswith(("text.", "image."))} == {"text.g", "image.g"}


def test_the_fusion_unit_reads_both_modalities(loaded_encoder):
    net = make_net(
        loaded_encoder, text=False, image=False, t2v=False, v2t=False, fusion=True
    ).eval()
    with torch.no_grad():
        base = net.encode("entity", features(net.encoder, TEXTS[:2], (True, True)))["fusion.f"]
        other_text = net.encode("entity", features(net.encoder, TEXTS[2:], (True, True)))[
            "fusion.f"
        ]
        other_image = net.encode("entity", features(net.encoder, TEXTS[:2], (True, False)))[
            "fusion.f"
        ]
    assert base.shape == (2, 32)
    assert not torch.allclose(base, other_text)
    assert torch.allclose(base[0], other_image[0]) and not torch.allclose(base[1], other_image[1])


@pytest.mark.parametrize(
    "settings", [DEFAULT, OTSettings(predict_with="student", distillation_weight=0.5)]
)
def test_ot_all_pairs_scores_and_gradients_equal_the_gathered_ones(loaded_encoder, settings):
    net = ot_net(loaded_encoder, settings, **OTMEL_UNITS)
    assert_all_pairs_match_gathered_scores_and_gradients(net, net.encoder)
