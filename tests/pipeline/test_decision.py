"""The linking decision: model score plus alias evidence, fitted on dev data."""

import math

import numpy
import pytest
import spacy

from spacy_m3el.pipeline.decision import LinkDecision, candidate_features, fit_decision

from ..util import ENTITIES, color_image, create_kb, make_doc, make_examples, train, unlabeled

NAN = float("nan")


def test_candidate_features():
    features = candidate_features(
        numpy.array([0.5, 0.2, 0.1]), [0.25, NAN, 0.5], [False, True, True]
    )
    expected = [
        [0.5, 1.0, math.log(0.25), 0.0],
        [0.2, 0.0, 0.0, 0.0],
        [0.1, 1.0, math.log(0.5), 1.0],
    ]
    numpy.testing.assert_allclose(features, expected)  # only alias candidates can be fuzzy


def test_default_decision_is_the_pure_ranking():
    decision = LinkDecision()
    assert decision.is_pure_ranking
    scores = numpy.array([0.1, 0.7, 0.3], dtype="float32")
    numpy.testing.assert_array_equal(decision.combine(scores, [0.5, NAN, 0.5]), scores)


def test_fit_learns_that_alias_candidates_are_right_when_look_alikes_score_higher():
    rng = numpy.random.default_rng(0)
    groups = []
    for _ in range(200):
        # The gold (an alias candidate) scores a little below an identical-looking dense candidate.
        gold_score = rng.normal()
        scores = numpy.array([gold_score, gold_score + 0.3, rng.normal() - 2])
        groups.append((scores, [0.5, NAN, 0.5], [False] * 3, 0))
    decision = fit_decision(groups)
    assert decision.alias_weight > 0.3 and decision.fitted_on == 200
    combined = decision.combine(numpy.array([1.0, 1.3, -1.0]), [0.5, NAN, 0.5])
    assert int(numpy.argmax(combined)) == 0
    # Without an alias entry (a misspelt name) the model's score still decides.
    assert int(numpy.argmax(decision.combine(numpy.array([1.0, 1.3, -1.0]), [NAN] * 3))) == 1


def test_fit_needs_usable_mentions():
    with pytest.raises(ValueError, match="no dev mention"):
        fit_decision([(numpy.array([1.0]), [0.5], [False], 0)])


def test_malformed_decision_is_a_clear_error():
    with pytest.raises(ValueError, match="Malformed linking decision"):
        LinkDecision.from_dict({"score_weight": 1.0})


def kb_with_look_alikes(vocab):
    """The test KB plus, per entity, a copy of its image and description under another name.

    The names ("Jordan II") are close to the originals but are not aliases of their mentions.
    """
    kb = create_kb(vocab)
    for i, record in enumerate(list(kb.records())):
        name = f"{record.name} {'I' * (i + 2)}"
        kb.add_multimodal_entity(f"L{i}", name, record.description, list(record.images))
    kb.add_name_aliases()
    return kb


@pytest.fixture(scope="module")
def look_alike_nlp(tiny_clip):
    from thinc.api import fix_random_seed

    from ..util import linker_config

    fix_random_seed(0)
    nlp = spacy.blank("en")
    linker = nlp.add_pipe("m3el_linker", config=dict(linker_config(tiny_clip), top_k=4))
    linker.set_kb(kb_with_look_alikes)
    examples = make_examples(nlp)
    nlp.initialize(lambda: examples)
    train(nlp, examples, steps=40)
    return nlp


def test_fitted_decision_prefers_the_alias_candidate_over_its_look_alike(build_nlp):
    """Before training, a look-alike scores like the original: the alias evidence decides."""
    nlp = build_nlp(component_overrides={"top_k": 6})
    linker = nlp.get_pipe("m3el_linker")
    linker.set_kb(kb_with_look_alikes)
    names = {kb_id: name for kb_id, name, _, _ in ENTITIES}
    docs = [
        make_doc(nlp, kb_id, color_image(color, noise=20, seed=7))
        for kb_id, _, _, color in ENTITIES
    ]
    for doc in docs:
        doc.ents = [doc.char_span(doc.ents[0].start_char, doc.ents[0].end_char, label="ENT")]

    def top_names():
        return [
            linker.kb.get_record(d.ents[0].kb_id_).name for d in nlp.pipe(d.copy() for d in docs)
        ]

    linker.alias_evidence = False
    pure = top_names()
    assert pure != [names[kb_id] for kb_id, _, _, _ in ENTITIES]  # look-alikes win some
    linker.alias_evidence = True
    decision = linker.fit_decision(make_examples(nlp, seed=50))
    assert decision.alias_weight > 0
    assert top_names() == [names[kb_id] for kb_id, _, _, _ in ENTITIES]


@pytest.mark.parametrize("lookup", ["v1", "v2"])
def test_misspelt_mention_still_links(look_alike_nlp, lookup):
    """Without an alias entry (v1) dense retrieval finds it; v2 also finds the near alias."""
    from spacy.util import registry

    nlp = look_alike_nlp
    linker = nlp.get_pipe("m3el_linker")
    kept = linker.get_candidates_batch
    linker.get_candidates_batch = registry.misc.get(f"spacy_m3el.AliasCandidatesBatch.{lookup}")()
    try:
        linker.fit_decision(make_examples(nlp, seed=50))
        doc = nlp.make_doc("Velmra was in the news again this week.")  # Velmora, misspelt
        doc.ents = [doc.char_span(0, 6, label="ENT")]
        doc._.image = color_image(ENTITIES[4][3], noise=20, seed=3)
        found = linker.get_candidates_batch(linker.kb, list(doc.ents))[0]
        assert {c.entity_ for c in found} == (set() if lookup == "v1" else {"Q5", "Q6"})
        candidate_set = linker.retrieve(
            list(doc.ents), linker.encode_mentions(list(doc.ents), [doc._.image])
        )[0]
        fuzzy = {linker.entity_cache.kb_ids[row] for row in candidate_set.fuzzy_rows}
        assert fuzzy == {c.entity_ for c in found}
        assert nlp(doc).ents[0].kb_id_ == ENTITIES[4][0]
    finally:
        linker.get_candidates_batch = kept


def test_save_and_load_keep_the_fitted_decision(look_alike_nlp, tmp_path):
    linker = look_alike_nlp.get_pipe("m3el_linker")
    fitted = linker.fit_decision(make_examples(look_alike_nlp, seed=50))
    look_alike_nlp.to_disk(tmp_path / "p")
    loaded = spacy.load(tmp_path / "p").get_pipe("m3el_linker")
    assert loaded.decision == fitted and not fitted.is_pure_ranking
    restored = spacy.blank("en").add_pipe("m3el_linker", config=loaded_config(look_alike_nlp))
    restored.from_bytes(linker.to_bytes())
    assert restored.decision == fitted


def loaded_config(nlp):
    config = dict(nlp.config["components"]["m3el_linker"])
    config.pop("factory")
    return config


def test_equal_unit_weights_rank_as_the_overall_score():
    rng = numpy.random.default_rng(1)
    units = rng.normal(size=(5, 3))
    overall = units.mean(axis=1)
    priors = [0.5, NAN, 0.25, NAN, NAN]
    by_unit = LinkDecision(0.0, 0.7, 0.2, unit_weights=(("a", 1 / 3), ("b", 1 / 3), ("c", 1 / 3)))
    single = LinkDecision(1.0, 0.7, 0.2)
    numpy.testing.assert_allclose(
        by_unit.combine(overall, priors, None, units), single.combine(overall, priors)
    )
    assert not by_unit.is_pure_ranking and by_unit.units == ["a", "b", "c"]
    with pytest.raises(ValueError, match="refit it"):
        by_unit.combine(overall, priors)  # no unit scores
    with pytest.raises(ValueError, match="refit it"):
        by_unit.combine(overall, priors, None, units[:, :2])  # other units


def test_fit_per_unit_trusts_the_unit_that_tells_the_gold():
    """Unit b finds the gold, unit a is noise that dominates the mean: one score weight
    cannot separate them, a weight per unit can."""
    rng = numpy.random.default_rng(0)

    def group():
        informative = rng.normal(size=4) * 0.3
        informative[0] += 1.0
        noise = rng.normal(size=4) * 3.0
        units = numpy.stack([noise, informative], axis=1)
        return units.mean(axis=1), [NAN] * 4, [False] * 4, 0, units

    train, test = [group() for _ in range(300)], [group() for _ in range(300)]
    single = fit_decision(train)
    by_unit = fit_decision(train, units=("a", "b"))
    weights = dict(by_unit.unit_weights)
    assert weights["b"] > 5 * abs(weights["a"]) and by_unit.score_weight == 0.0

    def hits(decision):
        return numpy.mean([numpy.argmax(decision.combine(*g[:3], g[4])) == 0 for g in test])

    assert hits(by_unit) > hits(single) + 0.2


def test_unit_weights_survive_the_cfg_and_old_settings_still_load():
    decision = LinkDecision(0.0, 0.5, -0.25, 0.1, 12, (("text", 0.4), ("image", 0.7)))
    assert LinkDecision.from_dict(decision.to_dict()) == decision
    old = {k: v for k, v in LinkDecision(1.2, 0.5).to_dict().items() if k != "unit_weights"}
    assert LinkDecision.from_dict(old) == LinkDecision(1.2, 0.5)


def test_the_linker_fits_a_weight_per_unit_and_keeps_it(look_alike_nlp, tmp_path):
    linker = look_alike_nlp.get_pipe("m3el_linker")
    examples = make_examples(look_alike_nlp, seed=50)
    single = linker.fit_decision(examples, per_unit=False)
    assert not single.unit_weights and single.score_weight != 0
    fitted = linker.fit_decision(examples)
    assert fitted.units == list(linker.model.net.units.enabled)
    fresh = [unlabeled(look_alike_nlp, eg) for eg in make_examples(look_alike_nlp, seed=7)[:4]]
    docs = list(look_alike_nlp.pipe(d.copy() for d in fresh))
    look_alike_nlp.to_disk(tmp_path / "p")
    loaded = spacy.load(tmp_path / "p")
    assert loaded.get_pipe("m3el_linker").decision == fitted
    again = list(loaded.pipe(d.copy() for d in fresh))
    assert [e.kb_id_ for d in again for e in d.ents] == [e.kb_id_ for d in docs for e in d.ents]
    assert [e._.m3el_candidates for d in again for e in d.ents] == [
        e._.m3el_candidates for d in docs for e in d.ents
    ]


def test_a_decision_fitted_for_other_units_is_refused(look_alike_nlp):
    import dataclasses

    linker = look_alike_nlp.get_pipe("m3el_linker")
    fitted = linker.fit_decision(make_examples(look_alike_nlp, seed=50))
    linker.decision = dataclasses.replace(fitted, unit_weights=tuple(reversed(fitted.unit_weights)))
    doc = unlabeled(look_alike_nlp, make_examples(look_alike_nlp, seed=7)[0])
    try:
        with pytest.raises(ValueError, match="fitted for the units .*refit it"):
            look_alike_nlp(doc)
    finally:
        linker.decision = fitted
