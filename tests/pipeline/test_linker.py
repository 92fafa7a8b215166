"""The m3el_linker component: learning, IO, batching, settings."""

import logging

import numpy
import pytest
import spacy
from spacy.tokens import Doc, DocBin

from spacy_m3el.pipeline.linker import M3ELLinker

from ..util import ENTITIES, color_image, make_doc, make_examples, train, unlabeled

TEXT_ONLY = {"use_image_unit": False, "use_t2v_unit": False, "use_v2t_unit": False}


def link(nlp, examples):
    docs = [nlp(unlabeled(nlp, eg)) for eg in examples]
    return [doc.ents[0].kb_id_ for doc in docs]


def accuracy(nlp, examples) -> float:
    gold = [eg.reference.ents[0].kb_id_ for eg in examples]
    return float(numpy.mean([p == g for p, g in zip(link(nlp, examples), gold)]))


@pytest.fixture
def trained_nlp(build_nlp):
    nlp = build_nlp()
    train(nlp, make_examples(nlp), steps=60)
    return nlp


def test_linker_learns_where_only_the_image_decides(build_nlp):
    nlp = build_nlp()
    history = train(nlp, make_examples(nlp), steps=60)
    assert history[-1] < history[0] / 2
    held_out = make_examples(nlp, per_entity=2, seed=1000)
    assert accuracy(nlp, held_out) == 1.0


def test_text_only_linker_cannot_resolve_shared_names(build_nlp):
    nlp = build_nlp(**TEXT_ONLY)
    train(nlp, make_examples(nlp), steps=60)
    held_out = make_examples(nlp, per_entity=2, seed=1000)
    # Pairs of entities share a name and the sentence: text alone can get one of each pair right.
    assert accuracy(nlp, held_out) <= 0.5 + 1e-9


def test_candidates_extension_is_ranked_probabilities(trained_nlp):
    doc = trained_nlp(make_doc(trained_nlp, "Q2", color_image(ENTITIES[1][3])))
    candidates = doc.ents[0]._.m3el_candidates
    assert candidates[0][0] == "Q2" == doc.ents[0].kb_id_
    scores = [score for _, score in candidates]
    assert scores == sorted(scores, reverse=True)
    assert sum(scores) == pytest.approx(1.0)
    assert {kb_id for kb_id, _ in candidates} >= {"Q1", "Q2"}  # both "Jordan"s are candidates
    assert doc._.m3el_image_status == "ok"


def test_to_disk_and_load_give_identical_scores_offline(trained_nlp, tmp_path, no_network):
    examples = make_examples(trained_nlp, seed=7)
    before = [trained_nlp(unlabeled(trained_nlp, eg)).ents[0]._.m3el_candidates for eg in examples]
    trained_nlp.to_disk(tmp_path / "pipeline")
    loaded = spacy.load(tmp_path / "pipeline")
    after = [loaded(unlabeled(loaded, eg)).ents[0]._.m3el_candidates for eg in examples]
    assert after == before
    assert loaded.get_pipe("m3el_linker").kb.get_record("Q3").name == "Kastrel"


def test_to_bytes_round_trip(trained_nlp, build_nlp):
    data = trained_nlp.get_pipe("m3el_linker").to_bytes()
    other = build_nlp()
    other.get_pipe("m3el_linker").from_bytes(data)
    examples = make_examples(trained_nlp, seed=3)
    assert link(other, examples) == link(trained_nlp, examples)


def test_pipe_equals_call(trained_nlp):
    examples = make_examples(trained_nlp, seed=5)
    single = [trained_nlp(unlabeled(trained_nlp, eg)).ents[0]._.m3el_candidates for eg in examples]
    docs = list(trained_nlp.pipe([unlabeled(trained_nlp, eg) for eg in examples], batch_size=4))
    piped = [doc.ents[0]._.m3el_candidates for doc in docs]
    for a, b in zip(single, piped):
        assert [k for k, _ in a] == [k for k, _ in b]
        numpy.testing.assert_allclose([s for _, s in a], [s for _, s in b], rtol=1e-4, atol=1e-6)


def test_n_process_2_matches_one_process(trained_nlp):
    examples = make_examples(trained_nlp, seed=9)
    docs = [unlabeled(trained_nlp, eg) for eg in examples]
    one = [d.ents[0].kb_id_ for d in trained_nlp.pipe([d.copy() for d in docs])]
    two = [
        d.ents[0].kb_id_
        for d in trained_nlp.pipe([d.copy() for d in docs], n_process=2, batch_size=3)
    ]
    assert one == two
    assert one == [eg.reference.ents[0].kb_id_ for eg in examples]


def test_docbin_round_trip_keeps_images_and_links(trained_nlp):
    examples = make_examples(trained_nlp, seed=11)
    docs = [unlabeled(trained_nlp, eg) for eg in examples]
    restored = list(
        DocBin(docs=docs, store_user_data=True)
        .from_bytes(DocBin(docs=docs, store_user_data=True).to_bytes())
        .get_docs(trained_nlp.vocab)
    )
    for original, copy in zip(docs, restored):
        numpy.testing.assert_array_equal(copy._.image, original._.image)
    assert link_docs(trained_nlp, restored) == [eg.reference.ents[0].kb_id_ for eg in examples]


def link_docs(nlp, docs):
    return [doc.ents[0].kb_id_ for doc in nlp.pipe(docs)]


def test_missing_image_falls_back_to_text(trained_nlp):
    doc = trained_nlp(make_doc(trained_nlp, "Q1", None))
    assert doc._.m3el_image_status == "none"
    assert doc.ents[0].kb_id_ in {"Q1", "Q2"}  # text alone still finds a "Jordan"
    assert len(doc.ents[0]._.m3el_candidates) >= 2


def test_unreadable_image_falls_back_and_warns_once(trained_nlp, tmp_path, caplog):
    docs = [make_doc(trained_nlp, "Q1", str(tmp_path / f"missing{i}.jpg")) for i in range(3)]
    docs.append(make_doc(trained_nlp, "Q1", b"not an image"))
    with caplog.at_level(logging.WARNING, logger="spacy_m3el"):
        out = list(trained_nlp.pipe(docs, batch_size=8))
    assert all(d._.m3el_image_status.startswith("unreadable") for d in out)
    assert all(d.ents[0].kb_id_ in {"Q1", "Q2"} for d in out)
    warnings = [r for r in caplog.records if "could not be read" in r.getMessage()]
    assert len(warnings) == 1 and "4 of 4" in warnings[0].getMessage()


def test_threshold_gives_nil(build_nlp):
    nlp = build_nlp(component_overrides={"threshold": 1.0})
    doc = nlp(make_doc(nlp, "Q3", color_image(ENTITIES[2][3])))
    assert doc.ents[0].kb_id_ == M3ELLinker.NIL
    assert doc.ents[0]._.m3el_candidates  # the ranking is still there


def test_threshold_out_of_range(build_nlp):
    with pytest.raises(ValueError, match="E1043"):
        build_nlp(component_overrides={"threshold": 1.5})


def test_labels_discard_and_no_candidates(build_nlp):
    nlp = build_nlp(component_overrides={"labels_discard": ["DATE"], "top_k": 0})
    doc = nlp.make_doc("Jordan met Zorblax on Monday.")
    doc.ents = [
        doc.char_span(0, 6, label="ENT"),
        doc.char_span(11, 18, label="ENT"),
        doc.char_span(22, 28, label="DATE"),
    ]
    doc = nlp(doc)
    jordan, unknown, date = doc.ents
    assert jordan.kb_id_ in {"Q1", "Q2"}
    assert unknown.kb_id_ == "NIL" and unknown._.m3el_candidates == []
    assert date.kb_id_ == "NIL" and date._.m3el_candidates is None


def test_top_k_adds_nearest_entities(build_nlp):
    nlp = build_nlp(component_overrides={"top_k": 6})
    doc = nlp.make_doc("Zorblax was in the news again this week.")
    doc.ents = [doc.char_span(0, 7, label="ENT")]
    doc = nlp(doc)
    assert len(doc.ents[0]._.m3el_candidates) == 6
    assert doc.ents[0].kb_id_ != "NIL"


@pytest.mark.parametrize("max_candidates", [None, 6, 3, 1])
def test_max_candidates_keeps_the_most_similar(build_nlp, max_candidates):
    """With every entity a candidate (top_k 6 of 6), the cap keeps the most similar ones."""
    nlp = build_nlp(component_overrides={"top_k": 6, "max_candidates": max_candidates})
    linker = nlp.get_pipe("m3el_linker")
    doc = make_doc(nlp, "Q3", color_image(ENTITIES[2][3]))
    doc = nlp(doc)
    ranked = {kb_id for kb_id, _ in doc.ents[0]._.m3el_candidates}
    images, _ = linker.load_images([doc])
    query = linker.model.retrieval_vectors(
        linker.encode_mentions([doc.ents[0]], images), query=True
    )
    cache = linker.entity_cache
    expected = {cache.kb_ids[row] for row in cache.nearest(query, max_candidates or 6)[0]}
    assert ranked == expected and len(ranked) == (max_candidates or 6)


def test_overwrite_false_keeps_existing_ids(build_nlp):
    nlp = build_nlp(component_overrides={"overwrite": False})
    doc = make_doc(nlp, "Q1", color_image(ENTITIES[0][3]))
    doc.ents = [doc.char_span(0, 6, label="ENT", kb_id="Q999")]
    assert nlp(doc).ents[0].kb_id_ == "Q999"


def test_doc_without_entities_and_empty_doc(trained_nlp):
    assert trained_nlp("").ents == ()
    doc = trained_nlp("Nothing to link here.")
    assert doc.ents == () and doc._.m3el_image_status is None


def test_evaluate_reports_nel_and_ranking_metrics(trained_nlp):
    scores = trained_nlp.evaluate(make_examples(trained_nlp, seed=21))
    for key in (
        "nel_micro_p",
        "nel_micro_r",
        "nel_micro_f",
        "nel_mrr",
        "nel_hits@1",
        "nel_hits@3",
        "nel_hits@5",
    ):
        assert key in scores
    assert scores["nel_micro_f"] == 1.0 and scores["nel_mrr"] == 1.0


def test_use_gold_ents_false_needs_predicted_entities(build_nlp):
    nlp = build_nlp(component_overrides={"use_gold_ents": False})
    losses = nlp.update(make_examples(nlp))  # predicted docs have no entities: nothing to learn
    assert losses["m3el_linker"] == 0.0


def test_gold_id_missing_from_kb_is_a_clear_error(build_nlp):
    nlp = build_nlp()
    examples = make_examples(nlp)
    examples[0].reference.ents = [examples[0].reference.char_span(0, 6, label="ENT", kb_id="Q404")]
    with pytest.raises(ValueError, match="Q404.*not in the knowledge base"):
        nlp.update(examples)


def test_gold_id_missing_from_kb_can_be_skipped(build_nlp):
    nlp = build_nlp(component_overrides={"ignore_missing_gold": True})
    examples = make_examples(nlp)
    examples[0].reference.ents = [examples[0].reference.char_span(0, 6, label="ENT", kb_id="Q404")]
    nlp.update(examples)
    assert nlp.get_pipe("m3el_linker").skipped_missing_gold == 1


def test_initialize_without_kb_is_a_clear_error(tiny_clip):
    from ..util import linker_config

    nlp = spacy.blank("en")
    nlp.add_pipe("m3el_linker", config=linker_config(tiny_clip))
    with pytest.raises(ValueError, match="E139"):
        nlp.initialize()


def test_docs_are_valid_after_linking(trained_nlp):
    doc = trained_nlp(make_doc(trained_nlp, "Q5", color_image(ENTITIES[4][3])))
    assert isinstance(doc, Doc)
    assert [t.ent_kb_id_ for t in doc.ents[0]] == [doc.ents[0].kb_id_]


def test_training_twice_with_the_same_seed_gives_the_same_weights(build_nlp):
    import torch

    states = []
    for _ in range(2):
        nlp = build_nlp()
        train(nlp, make_examples(nlp), steps=5)
        states.append(nlp.get_pipe("m3el_linker").net.state_dict())
    assert all(torch.equal(states[0][key], states[1][key]) for key in states[0])


def test_an_image_store_trains_the_weights_of_decoding_on_the_fly(tiny_clip, tmp_path):
    """Mention images as files and KB images as bytes, read from a store built by
    ``initialize``: the same weights and entity cache as decoding every time."""
    import torch
    from PIL import Image
    from thinc.api import fix_random_seed

    from ..util import create_kb, linker_config

    def run(store):
        fix_random_seed(0)
        nlp = spacy.blank("en")
        nlp.add_pipe("m3el_linker", config=linker_config(tiny_clip)).set_kb(create_kb)
        examples = make_examples(nlp)
        for i, eg in enumerate(examples):
            path = tmp_path / f"mention-{i}.png"
            if not path.exists():
                Image.fromarray(eg.reference._.image).save(path)
            eg.reference._.image = str(path)
        if store is not None:
            nlp.config["initialize"]["components"]["m3el_linker"] = {"image_store": str(store)}
        nlp.initialize(lambda: examples)
        train(nlp, examples, steps=5)
        linker = nlp.get_pipe("m3el_linker")
        return linker, linker.build_entity_cache()

    plain, plain_cache = run(None)
    stored, stored_cache = run(tmp_path / "store")
    assert plain.images.store is None
    assert stored.images.store.hits > 0 and stored.images.store.misses == 0
    assert len(stored.images.store) == len(ENTITIES) + len(make_examples(spacy.blank("en")))
    for key, value in plain.net.state_dict().items():
        assert torch.equal(value, stored.net.state_dict()[key]), key
    assert plain_cache.model_fingerprint == stored_cache.model_fingerprint
    for key, value in plain_cache.stored.items():
        numpy.testing.assert_array_equal(value, stored_cache.stored[key])


@pytest.mark.parametrize(
    "switches",
    [
        {"use_text_unit": False},
        {"use_image_unit": False},
        {"use_t2v_unit": False},
        {"use_v2t_unit": False},
        {"use_contrastive_loss": False},
        {"use_text_unit": False, "use_image_unit": False, "use_v2t_unit": False},
        TEXT_ONLY,
    ],
)
def test_every_ablation_trains_and_links(build_nlp, switches):
    nlp = build_nlp(**switches)
    history = train(nlp, make_examples(nlp), steps=3)
    assert all(numpy.isfinite(history)) and history[-1] > 0
    doc = nlp(make_doc(nlp, "Q4", color_image(ENTITIES[3][3])))
    assert doc.ents[0].kb_id_ in {"Q3", "Q4"}
    net = nlp.get_pipe("m3el_linker").net
    assert (net.text_unit is None) == (switches.get("use_text_unit") is False)
    assert (net.image_unit is None) == (switches.get("use_image_unit") is False)


def test_all_units_off_is_a_config_error(build_nlp):
    with pytest.raises(ValueError, match="At least one matching unit"):
        build_nlp(use_text_unit=False, use_image_unit=False, use_t2v_unit=False, use_v2t_unit=False)


@pytest.mark.parametrize(
    "setting,value",
    [
        ("top_k", -1),
        ("max_candidates", 0),
        ("n_hard_negatives", -2),
        ("max_context_tokens", 0),
        ("entity_batch_size", 0),
        ("entity_cache_precision", "int4"),
    ],
)
def test_invalid_settings_are_clear_errors(tiny_clip, setting, value):
    from ..util import linker_config

    nlp = spacy.blank("en")
    with pytest.raises(ValueError, match=setting):
        nlp.add_pipe("m3el_linker", config={**linker_config(tiny_clip), setting: value})
