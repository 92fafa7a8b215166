"""MultimodalKB: records, aliases, serialization, fingerprints."""
import numpy
import pytest
import spacy

from spacy_m3el.kb import MultimodalKB, get_alias_candidates, kb_from_file, normalize_alias


@pytest.fixture
def vocab():
    return spacy.blank("en").vocab


def small_kb(vocab):
    kb = MultimodalKB(vocab, image_root="/data/kb_image")
    kb.add_multimodal_entity("Q41421", "Michael Jordan", "basketball player", ["mj.jpg"], freq=30)
    kb.add_multimodal_entity("Q810", "Jordan", "country", [b"\x89PNG-bytes"], freq=60)
    kb.add_multimodal_entity("Q40059", "Jordan", "river", [numpy.zeros((2, 2, 3), numpy.uint8)], freq=10)
    kb.add_multimodal_entity("Q72", "Zürich", "city", [])
    kb.add_multimodal_entity("Q1490", "東京", "capital", ["/abs/tokyo.jpg"])
    kb.add_name_aliases(extra_aliases={"Q41421": ["MJ", "Jordan"]})
    return kb


def test_records_and_duplicates(vocab):
    kb = small_kb(vocab)
    assert kb.entity_ids == ["Q41421", "Q810", "Q40059", "Q72", "Q1490"]
    assert kb.get_record("Q810").description == "country"
    with pytest.raises(ValueError, match="Duplicate entity ID 'Q810'"):
        kb.add_multimodal_entity("Q810", "Jordan", "again")
    with pytest.raises(ValueError, match="non-empty"):
        kb.add_multimodal_entity("", "x")
    with pytest.raises(KeyError, match="Q404"):
        kb.get_record("Q404")


def test_shared_alias_priors(vocab):
    kb = small_kb(vocab)
    candidates = kb.get_alias_candidates("Jordan")
    assert {c.entity_ for c in candidates} == {"Q41421", "Q810", "Q40059"}
    priors = {c.entity_: c.prior_prob for c in candidates}
    assert sum(priors.values()) <= 1.0
    assert priors["Q810"] > priors["Q41421"] > priors["Q40059"]  # follows the frequencies


@pytest.mark.parametrize("text", ["Jordan", "JORDAN", "  jordan ", "Ｊｏｒｄａｎ", "jordan"])
def test_normalized_lookup(vocab, text):
    kb = small_kb(vocab)
    assert {c.entity_ for c in kb.candidates_for(text)} == {"Q41421", "Q810", "Q40059"}


def test_url_quoted_and_unicode_lookup(vocab):
    kb = small_kb(vocab)
    assert [c.entity_ for c in kb.candidates_for("Michael%20Jordan")] == ["Q41421"]
    assert [c.entity_ for c in kb.candidates_for("zürich")] == ["Q72"]
    assert [c.entity_ for c in kb.candidates_for("東京")] == ["Q1490"]
    assert normalize_alias("Michael_Jordan") == "michael jordan"
    doc = spacy.blank("en")("MJ dunked")
    assert [c.entity_ for c in get_alias_candidates(kb, doc[0:1])] == ["Q41421"]


def test_disk_and_bytes_round_trips(vocab, tmp_path):
    kb = small_kb(vocab)
    kb.to_disk(tmp_path / "kb")
    for loaded in (MultimodalKB(vocab).from_disk(tmp_path / "kb"), MultimodalKB(vocab).from_bytes(kb.to_bytes())):
        assert loaded.entity_ids == kb.entity_ids
        assert loaded.image_root == "/data/kb_image"
        assert loaded.get_record("Q72").name == "Zürich"
        assert loaded.get_record("Q810").images == (b"\x89PNG-bytes",)
        numpy.testing.assert_array_equal(loaded.get_record("Q40059").images[0], numpy.zeros((2, 2, 3), numpy.uint8))
        assert loaded.fingerprint() == kb.fingerprint()
        assert {c.entity_: c.prior_prob for c in loaded.get_alias_candidates("Jordan")} == pytest.approx(
            {c.entity_: c.prior_prob for c in kb.get_alias_candidates("Jordan")}
        )
    assert kb_from_file(tmp_path / "kb")(vocab).entity_ids == kb.entity_ids


def test_plain_spacy_kb_folder_and_missing_folder(vocab, tmp_path):
    from spacy.kb import InMemoryLookupKB

    plain = InMemoryLookupKB(vocab, entity_vector_length=1)
    plain.add_entity("Q1", 1.0, [0.0])
    plain.to_disk(tmp_path / "plain")
    with pytest.raises(ValueError, match="not a multimodal KB folder"):
        MultimodalKB(vocab).from_disk(tmp_path / "plain")
    with pytest.raises(ValueError, match="not found"):
        kb_from_file(tmp_path / "nowhere")(vocab)
    with pytest.raises(ValueError, match="paths.kb"):
        kb_from_file(None)(vocab)


def test_resolve_image_and_fingerprint_changes(vocab):
    kb = small_kb(vocab)
    assert kb.resolve_image("mj.jpg") == "/data/kb_image/mj.jpg"
    assert kb.resolve_image("/abs/tokyo.jpg") == "/abs/tokyo.jpg"
    assert kb.resolve_image(b"bytes") == b"bytes"
    before = kb.fingerprint()
    other = MultimodalKB(vocab, image_root="/data/kb_image")
    for record in kb.records():
        description = "a river in the Levant" if record.kb_id == "Q40059" else record.description
        other.add_multimodal_entity(record.kb_id, record.name, description, record.images)
    assert other.fingerprint() != before
