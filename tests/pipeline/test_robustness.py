"""Odd documents and training data never crash the linker or lose data silently."""

import numpy
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from spacy.training import Example

from spacy_m3el.pipeline.inputs import mention_text

from ..util import ENTITIES, color_image, make_doc, make_examples, trained_pipeline


@pytest.fixture(scope="module")
def nlp(tiny_clip):
    nlp = trained_pipeline(tiny_clip)
    return nlp


def test_very_long_text_keeps_the_mention_context(nlp):
    filler = "word " * 5000
    doc = nlp.make_doc(filler + "Jordan scored again. " + filler)
    start = len(filler)
    doc.ents = [doc.char_span(start, start + 6, label="ENT")]
    text = mention_text(doc.ents[0], max_context_tokens=64)
    assert text.startswith("Jordan [SEP] ") and "Jordan scored again" in text
    assert len(text.split()) < 80
    doc = nlp(doc)
    assert doc.ents[0].kb_id_ in {"Q1", "Q2"}


def test_sentence_is_the_context_when_sentences_are_set(nlp):
    doc = nlp.make_doc("Kastrel is nice. Jordan scored again. Velmora sank.")
    for token in doc:
        token.is_sent_start = token.i == 0 or doc[token.i - 1].text == "."
    doc.ents = [doc.char_span(17, 23, label="ENT")]
    assert mention_text(doc.ents[0], 64) == "Jordan [SEP] Jordan scored again."


@pytest.mark.parametrize("text", ["Jordan%20River", "JORDAN", "  jordan  ", "Ｊｏｒｄａｎ"])
def test_quoted_case_and_width_variants_find_candidates(nlp, text):
    doc = nlp.make_doc(f"{text} was in the news.")
    doc.ents = [doc.char_span(0, len(text.rstrip()), label="ENT", alignment_mode="expand")]
    doc = nlp(doc)
    candidates = {kb_id for kb_id, _ in doc.ents[0]._.m3el_candidates}
    if text != "Jordan%20River":
        assert {"Q1", "Q2"} <= candidates


def test_misaligned_gold_entity_is_skipped_not_crashing(nlp):
    reference = make_doc(nlp, "Q1", color_image(ENTITIES[0][3]))
    # The predicted doc merges the mention with the next word, so the gold span cannot align.
    predicted = nlp.make_doc(reference.text)
    with predicted.retokenize() as retokenizer:
        retokenizer.merge(predicted[0:2])
    example = Example(predicted, reference)
    losses = nlp.update([example] + make_examples(nlp)[1:3])
    assert numpy.isfinite(losses["m3el_linker"])


def test_batch_without_any_gold_is_a_no_op(nlp):
    doc = nlp.make_doc("Nothing here.")
    assert nlp.update([Example(nlp.make_doc(doc.text), doc)]) == {"m3el_linker": 0.0}


WORDS = st.sampled_from(
    ["Jordan", "Kastrel", "Velmora", "the", "river", "é", "東京", "%20", "!", "", "\n", "Q1"]
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(words=st.lists(WORDS, min_size=0, max_size=30), data=st.data())
def test_any_document_links_without_error(nlp, words, data):
    doc = nlp.make_doc(" ".join(words))
    if len(doc):
        starts = sorted(set(data.draw(st.lists(st.integers(0, len(doc) - 1), max_size=4))))
        spans, last_end = [], 0
        for start in starts:
            if start >= last_end:
                end = min(len(doc), start + data.draw(st.integers(1, 3)))
                spans.append(doc[start:end])
                last_end = end
        doc.ents = [doc.char_span(s.start_char, s.end_char, label="ENT") for s in spans]
    doc._.image = data.draw(
        st.sampled_from([None, color_image((10, 200, 10)), b"broken", "/nonexistent.png"])
    )
    linked = nlp(doc)
    assert len(linked.ents) == len(doc.ents)
    for ent in linked.ents:
        candidates = ent._.m3el_candidates
        assert ent.kb_id_ == "NIL" or ent.kb_id_ == candidates[0][0]
        assert all(numpy.isfinite(score) for _, score in candidates)
