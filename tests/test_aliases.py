"""Fuzzy alias lookup (one edit) and the KB's fuzzy candidates."""

import pytest
import spacy

from spacy_m3el.aliases import FuzzyAliasIndex, within_one_edit
from spacy_m3el.kb import MultimodalKB


@pytest.mark.parametrize(
    "a,b,expected",
    [
        ("jordan", "jordan", True),
        ("jordan", "jodan", True),  # deletion
        ("jordan", "jordann", True),  # insertion
        ("jordan", "jorden", True),  # substitution
        ("jordan", "jrodan", True),  # neighbours swapped
        ("jordan", "jdroan", False),
        ("jordan", "jord", False),
        ("jordan", "odran", False),
    ],
)
def test_within_one_edit(a, b, expected):
    assert within_one_edit(a, b) is expected
    assert within_one_edit(b, a) is expected


def test_index_finds_aliases_one_edit_away_and_skips_short_names():
    index = FuzzyAliasIndex(["michael jordan", "jordan", "kastrel", "ab"])
    assert index.lookup("michal jordan") == ["michael jordan"]
    assert index.lookup("kastrell") == ["kastrel"]
    assert index.lookup("jrodan") == ["jordan"]
    assert index.lookup("velmora") == []
    assert index.lookup("abc") == []  # too short to match anything fuzzily


def test_kb_fuzzy_candidates_only_when_nothing_matches_exactly():
    kb = MultimodalKB(spacy.blank("en").vocab)
    kb.add_multimodal_entity("Q1", "Michael Jordan")
    kb.add_multimodal_entity("Q2", "Michael Jordan")
    kb.add_multimodal_entity("Q3", "Michal Jordanov")
    kb.add_name_aliases()
    assert {c.entity_ for c in kb.candidates_for("Michal Jordan")} == set()
    fuzzy = kb.candidates_for("Michal Jordan", fuzzy=True)
    assert {c.entity_ for c in fuzzy} == {"Q1", "Q2"}
    assert {c.alias_ for c in fuzzy} <= {"Michael Jordan", "michael jordan"}
    exact = kb.candidates_for("Michael Jordan", fuzzy=True)
    assert {c.entity_ for c in exact} == {"Q1", "Q2"} and {c.alias_ for c in exact} == {
        "Michael Jordan"
    }
    # New aliases are found without rebuilding by hand.
    kb.add_multimodal_entity("Q4", "Kastrel")
    kb.add_name_aliases()
    assert {c.entity_ for c in kb.candidates_for("Kastrl", fuzzy=True)} == {"Q4"}
