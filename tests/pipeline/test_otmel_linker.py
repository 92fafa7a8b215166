"""The m3el_linker with OT-MEL's pieces: OT alignment, fusion unit, distilled student,
and the dual-encoder baseline, through the component (training, linking, IO)."""

import pytest
import spacy

from spacy_m3el.ml import transport

from ..util import make_examples, train, unlabeled
from .test_linker import accuracy

OT = {"@misc": "spacy_m3el.OTAlignment.v1", "iterations": 3}
STUDENT = dict(OT, distillation_weight=0.5, predict_with="student")
OTMEL = {"use_t2v_unit": False, "use_v2t_unit": False, "use_fusion_unit": True}
DUAL = {"use_t2v_unit": False, "use_v2t_unit": False, "use_late_interaction": False}


def candidates(nlp, examples):
    return [nlp(unlabeled(nlp, eg)).ents[0]._.m3el_candidates for eg in examples]


@pytest.fixture(scope="module")
def student_nlp(tiny_clip):
    from thinc.api import fix_random_seed

    from ..util import create_kb, linker_config

    fix_random_seed(0)
    nlp = spacy.blank("en")
    nlp.add_pipe("m3el_linker", config=linker_config(tiny_clip, alignment=STUDENT, **OTMEL))
    nlp.get_pipe("m3el_linker").set_kb(create_kb)
    examples = make_examples(nlp)
    nlp.initialize(lambda: examples)
    train(nlp, examples, steps=60)
    return nlp


def test_the_distilled_linker_learns_and_links_without_sinkhorn(student_nlp, monkeypatch):
    monkeypatch.setattr(transport, "log_sinkhorn", lambda *a, **k: pytest.fail("Sinkhorn ran"))
    held_out = make_examples(student_nlp, per_entity=2, seed=1000)
    assert accuracy(student_nlp, held_out) == 1.0


def test_a_saved_student_pipeline_reloads_offline_with_identical_scores(
    student_nlp, tmp_path, no_network, monkeypatch
):
    examples = make_examples(student_nlp, seed=7)
    before = candidates(student_nlp, examples)
    student_nlp.to_disk(tmp_path / "pipeline")
    monkeypatch.setattr(transport, "log_sinkhorn", lambda *a, **k: pytest.fail("Sinkhorn ran"))
    loaded = spacy.load(tmp_path / "pipeline")
    assert candidates(loaded, examples) == before


def test_switching_teacher_and_student_changes_the_cache_fingerprint(student_nlp, tmp_path):
    student_nlp.to_disk(tmp_path / "pipeline")
    overrides = {"components.m3el_linker.model.alignment.predict_with": "teacher"}
    teacher = spacy.load(tmp_path / "pipeline", config=overrides)
    student_model = student_nlp.get_pipe("m3el_linker").model
    teacher_model = teacher.get_pipe("m3el_linker").model
    assert teacher_model.fingerprint() != student_model.fingerprint()
    examples = make_examples(student_nlp, per_entity=2, seed=1000)
    assert accuracy(teacher, examples) == 1.0  # the teacher it was distilled from links too


@pytest.mark.parametrize(
    "model",
    [dict(alignment=OT), dict(alignment=OT, **OTMEL), dict(OTMEL), DUAL],
    ids=["m3el_ot", "otmel_teacher", "fusion_attention", "dual_encoder"],
)
def test_every_new_switch_trains_and_links(build_nlp, model):
    nlp = build_nlp(**model)
    history = train(nlp, make_examples(nlp), steps=40)
    assert history[-1] < history[0]
    assert accuracy(nlp, make_examples(nlp, per_entity=2, seed=1000)) >= 0.75
