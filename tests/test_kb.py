"""MultimodalKB: records, alias helpers, candidate lookup, serialization, fingerprints."""

import re
from pathlib import Path

import numpy
import pytest
import spacy
import srsly
from spacy.kb import InMemoryLookupKB

from spacy_m3el.kb import (
    RECORDS_FILE,
    EntityRecord,
    MultimodalKB,
    get_alias_candidates,
    get_alias_candidates_batch,
    kb_from_file,
    normalize_alias,
)

PNG = b"\x89PNG\r\n\x1a\n-not-really-a-png"
PIXELS = numpy.arange(12, dtype=numpy.uint8).reshape(2, 2, 3)


@pytest.fixture
def vocab():
    return spacy.blank("en").vocab


def build_kb(vocab, image_root="/data/kb_images") -> MultimodalKB:
    kb = MultimodalKB(vocab, image_root=image_root)
    kb.add_multimodal_entity(
        "Q41421", "Michael Jordan", "basketball player", ["people/mj.jpg"], freq=30
    )
    kb.add_multimodal_entity("Q810", "Jordan", "country in the Middle East", [PNG], freq=60)
    kb.add_multimodal_entity("Q40059", "Jordan", "river", [PIXELS, "/abs/river.jpg"], freq=10)
    kb.add_multimodal_entity("Q1", "Jordan River", "the river's full name", [])
    kb.add_multimodal_entity("Q72", "Zürich", "largest city in Switzerland", [])
    kb.add_multimodal_entity("Q1490", "東京", "capital of Japan", ["/abs/tokyo.jpg"])
    kb.add_name_aliases(extra_aliases={"Q41421": ["MJ", "Jordan"]})
    return kb


def candidate_map(candidates):
    return {c.entity_: c.prior_prob for c in candidates}


# Records ---------------------------------------------------------------------


def test_add_and_get_records(vocab):
    kb = build_kb(vocab)
    assert kb.entity_ids == ["Q41421", "Q810", "Q40059", "Q1", "Q72", "Q1490"]
    assert len(kb) == 6
    assert [r.kb_id for r in kb.records()] == kb.entity_ids
    assert kb.get_record("Q41421") == EntityRecord(
        "Q41421", "Michael Jordan", "basketball player", ("people/mj.jpg",)
    )
    assert kb.get_record("Q810").images == (PNG,)
    river = kb.get_record("Q40059")
    numpy.testing.assert_array_equal(river.images[0], PIXELS)
    assert river.images[1] == "/abs/river.jpg"
    assert kb.get_record("Q1").images == ()
    assert kb.has_record("Q72") and not kb.has_record("Q404")
    assert kb.contains_entity("Q1490")
    with pytest.raises(KeyError, match="Q404"):
        kb.get_record("Q404")


def test_record_images_are_normalized(vocab, tmp_path):
    kb = MultimodalKB(vocab)
    buffer = PIXELS.copy()
    kb.add_multimodal_entity(
        "Q9", "Nine", None, [tmp_path / "a.png", bytearray(b"xyz"), buffer, None]
    )
    record = kb.get_record("Q9")
    assert record.description == ""
    assert record.images[:2] == (str(tmp_path / "a.png"), b"xyz")
    assert len(record.images) == 3  # None is skipped
    buffer[:] = 0  # the caller's buffer does not leak into the KB
    numpy.testing.assert_array_equal(record.images[2], PIXELS)


def test_duplicate_ids_raise_naming_the_id(vocab):
    kb = build_kb(vocab)
    before = kb.fingerprint()
    with pytest.raises(ValueError, match=r"Duplicate entity ID 'Q810'"):
        kb.add_multimodal_entity("Q810", "Jordan", "again")
    # The failed add leaves the KB unchanged.
    assert len(kb) == 6 and kb.get_record("Q810").description == "country in the Middle East"
    assert kb.fingerprint() == before
    # Entities added through spaCy's own API count as well.
    kb.add_entity("Q5", 1.0, [0.0])
    with pytest.raises(ValueError, match=r"'Q5'"):
        kb.add_multimodal_entity("Q5", "Five")


@pytest.mark.parametrize("bad_id", ["", None, 42])
def test_empty_or_non_string_ids_are_rejected(vocab, bad_id):
    kb = MultimodalKB(vocab)
    with pytest.raises(ValueError, match="non-empty strings"):
        kb.add_multimodal_entity(bad_id, "Name")
    assert len(kb) == 0 and kb.entity_ids == []


# Aliases -----------------------------------------------------------------------


def test_shared_names_give_several_candidates_with_priors_summing_to_at_most_one(vocab):
    kb = build_kb(vocab)
    priors = candidate_map(kb.get_alias_candidates("Jordan"))
    assert set(priors) == {"Q41421", "Q810", "Q40059"}
    assert sum(priors.values()) <= 1.0
    assert sum(priors.values()) == pytest.approx(1.0, abs=1e-5)
    # Priors follow the frequencies: 60 : 30 : 10.
    assert priors["Q810"] == pytest.approx(0.6, abs=1e-5)
    assert priors["Q41421"] == pytest.approx(0.3, abs=1e-5)
    assert priors["Q40059"] == pytest.approx(0.1, abs=1e-5)
    # A name of one entity only: a single candidate.
    assert list(candidate_map(kb.get_alias_candidates("MJ"))) == ["Q41421"]


def test_add_name_aliases_counts_and_is_idempotent(vocab):
    kb = MultimodalKB(vocab)
    kb.add_multimodal_entity("A", "Alpha", freq=0)  # zero frequency still gets a prior
    kb.add_multimodal_entity("B", "alpha")
    # "Alpha", "alpha" (shared by both through normalization), "Al", "al".
    assert kb.add_name_aliases(extra_aliases={"A": ["Al"]}) == 4
    assert set(kb.get_alias_strings()) == {"Alpha", "alpha", "Al", "al"}
    assert set(candidate_map(kb.get_alias_candidates("alpha"))) == {"A", "B"}
    assert set(candidate_map(kb.get_alias_candidates("Alpha"))) == {"A"}
    assert 0 < sum(candidate_map(kb.get_alias_candidates("alpha")).values()) <= 1.0
    assert kb.add_name_aliases() == 0  # existing aliases are kept


@pytest.mark.parametrize(
    "text",
    [
        "Jordan River",
        "jordan river",
        "JORDAN RIVER",
        "Jordan%20River",
        "jordan%20river",
        "Jordan_River",
        "  Jordan   River ",
        "Jordan\tRiver",
        "Ｊｏｒｄａｎ Ｒｉｖｅｒ",  # full-width forms (NFKC)
    ],
)
def test_normalized_alias_lookup(vocab, text):
    kb = build_kb(vocab)
    assert [c.entity_ for c in kb.candidates_for(text)] == ["Q1"]


def test_normalize_alias():
    assert normalize_alias("Jordan%20River") == "jordan river"
    assert normalize_alias("  Jordan \n River  ") == "jordan river"
    assert normalize_alias("Zu\u0308rich") == "zürich"  # combining diaeresis -> NFKC composed
    assert normalize_alias("ﬁnance") == "finance"  # ligature (NFKC)
    assert normalize_alias("STRASSE") == normalize_alias("straße")  # casefold
    assert normalize_alias("100%") == "100%"  # a lone percent sign is kept


def test_candidates_for_tries_exact_then_normalized(vocab):
    kb = MultimodalKB(vocab)
    kb.add_multimodal_entity("Q_upper", "upper")
    kb.add_multimodal_entity("Q_lower", "lower")
    kb.add_alias("JR", ["Q_upper"], [1.0])
    kb.add_alias("jr", ["Q_lower"], [1.0])
    assert [c.entity_ for c in kb.candidates_for("JR")] == ["Q_upper"]  # exact match wins
    assert [c.entity_ for c in kb.candidates_for("jr")] == ["Q_lower"]
    assert [c.entity_ for c in kb.candidates_for("Jr")] == ["Q_lower"]  # no exact match: normalized
    assert [c.entity_ for c in kb.candidates_for(" J%52 ")] == ["Q_lower"]  # "%52" is "R"
    assert kb.candidates_for("nobody") == []
    assert kb.candidates_for("") == []


def test_unicode_names(vocab):
    kb = build_kb(vocab)
    assert [c.entity_ for c in kb.candidates_for("Zürich")] == ["Q72"]
    assert [c.entity_ for c in kb.candidates_for("ZÜRICH")] == ["Q72"]
    assert [c.entity_ for c in kb.candidates_for("Zu\u0308rich")] == ["Q72"]
    assert [c.entity_ for c in kb.candidates_for("東京")] == ["Q1490"]
    assert [c.entity_ for c in kb.candidates_for("Z%C3%BCrich")] == ["Q72"]


def test_get_alias_candidates_on_spans(vocab):
    kb = build_kb(vocab)
    doc = spacy.blank("en")("MJ and JORDAN met in Zürich")
    mentions = [doc[0:1], doc[2:3], doc[5:6], doc[1:2]]
    assert [c.entity_ for c in get_alias_candidates(kb, mentions[0])] == ["Q41421"]
    batch = get_alias_candidates_batch(kb, mentions)
    assert [sorted(c.entity_ for c in cands) for cands in batch] == [
        ["Q41421"],
        ["Q40059", "Q41421", "Q810"],
        ["Q72"],
        [],
    ]
    # A plain spaCy KB falls back to spaCy's exact lookup.
    plain = InMemoryLookupKB(vocab, entity_vector_length=1)
    plain.add_entity("Q2", 1.0, [0.0])
    plain.add_alias("MJ", ["Q2"], [0.5])
    assert [c.entity_ for c in get_alias_candidates(plain, doc[0:1])] == ["Q2"]
    assert get_alias_candidates(plain, doc[2:3]) == []


# Serialization -------------------------------------------------------------------


def assert_same_kb(loaded: MultimodalKB, kb: MultimodalKB) -> None:
    assert loaded.entity_ids == kb.entity_ids
    assert loaded.image_root == kb.image_root
    for original in kb.records():
        record = loaded.get_record(original.kb_id)
        assert (record.kb_id, record.name, record.description) == (
            original.kb_id,
            original.name,
            original.description,
        )
        assert len(record.images) == len(original.images)
        for got, expected in zip(record.images, original.images):
            assert type(got) is type(expected)
            if isinstance(expected, numpy.ndarray):
                assert got.dtype == expected.dtype
                numpy.testing.assert_array_equal(got, expected)
            else:
                assert got == expected
    assert sorted(loaded.get_alias_strings()) == sorted(kb.get_alias_strings())
    for alias in kb.get_alias_strings():
        expected = {
            c.entity_: (c.prior_prob, c.entity_freq) for c in kb.get_alias_candidates(alias)
        }
        got = {c.entity_: (c.prior_prob, c.entity_freq) for c in loaded.get_alias_candidates(alias)}
        assert got == expected, alias  # priors and frequencies are stored as float32 on both sides
    assert loaded.fingerprint() == kb.fingerprint()


@pytest.mark.parametrize("fresh_vocab", [False, True], ids=["same-vocab", "fresh-vocab"])
@pytest.mark.parametrize("image_root", ["/data/kb_images", None])
def test_disk_round_trip(vocab, tmp_path, fresh_vocab, image_root):
    kb = build_kb(vocab, image_root=image_root)
    kb.to_disk(tmp_path / "kb")
    assert (tmp_path / "kb" / RECORDS_FILE).exists()
    target = spacy.blank("en").vocab if fresh_vocab else vocab
    loaded = MultimodalKB(target)
    assert loaded.from_disk(tmp_path / "kb") is loaded  # returns self, so it can be chained
    assert_same_kb(loaded, kb)
    # Loading again and saving again is stable.
    loaded.to_disk(tmp_path / "again")
    assert_same_kb(MultimodalKB(vocab).from_disk(str(tmp_path / "again")), kb)


@pytest.mark.parametrize("fresh_vocab", [False, True], ids=["same-vocab", "fresh-vocab"])
def test_bytes_round_trip(vocab, fresh_vocab):
    kb = build_kb(vocab)
    target = spacy.blank("en").vocab if fresh_vocab else vocab
    loaded = MultimodalKB(target)
    assert loaded.from_bytes(kb.to_bytes()) is loaded
    assert_same_kb(loaded, kb)
    assert loaded.to_bytes() == kb.to_bytes()


def test_round_trip_of_an_empty_kb(vocab, tmp_path):
    kb = MultimodalKB(vocab)
    kb.to_disk(tmp_path / "kb")
    assert MultimodalKB(vocab).from_disk(tmp_path / "kb").entity_ids == []
    assert MultimodalKB(vocab).from_bytes(kb.to_bytes()).fingerprint() == kb.fingerprint()


def test_kb_from_file(vocab, tmp_path):
    kb = build_kb(vocab)
    kb.to_disk(tmp_path / "kb")
    loaded = kb_from_file(tmp_path / "kb")(spacy.blank("en").vocab)
    assert isinstance(loaded, MultimodalKB)
    assert_same_kb(loaded, kb)
    assert kb_from_file(str(tmp_path / "kb"))(vocab).entity_ids == kb.entity_ids


def test_kb_from_file_on_a_missing_folder(vocab, tmp_path):
    missing = tmp_path / "nowhere"
    loader = kb_from_file(missing)  # nothing is read until the loader is called
    with pytest.raises(ValueError, match=re.escape(str(missing))):
        loader(vocab)
    with pytest.raises(ValueError, match="paths.kb"):
        kb_from_file(None)(vocab)


def test_from_disk_of_a_plain_spacy_kb_folder(vocab, tmp_path):
    plain = InMemoryLookupKB(vocab, entity_vector_length=1)
    plain.add_entity("Q1", 1.0, [0.0])
    plain.add_alias("one", ["Q1"], [1.0])
    plain.to_disk(tmp_path / "plain")
    with pytest.raises(ValueError, match=f"not a multimodal KB folder: {RECORDS_FILE} is missing"):
        MultimodalKB(vocab).from_disk(tmp_path / "plain")
    with pytest.raises(ValueError, match="not a multimodal KB folder"):
        kb_from_file(tmp_path / "plain")(vocab)


@pytest.mark.parametrize(
    "content",
    [
        b"\xc1\xc1 this is not msgpack",
        b"",
        srsly.msgpack_dumps({"version": 1, "records": []})[:-1] + b"\x00\x00",  # trailing garbage
        srsly.msgpack_dumps({"version": 1, "image_root": None, "records": []})[:5],  # truncated
        srsly.msgpack_dumps([1, 2, 3]),
        srsly.msgpack_dumps({"version": 99, "records": []}),
        srsly.msgpack_dumps({"version": 1}),
        srsly.msgpack_dumps({"version": 1, "records": [["Q1", "name"]]}),
        srsly.msgpack_dumps({"version": 1, "records": [[7, "name", "", [], 1.0]]}),
    ],
    ids=[
        "garbage",
        "empty",
        "trailing",
        "truncated",
        "list",
        "version",
        "no-records",
        "short-row",
        "int-id",
    ],
)
def test_corrupted_records_file_gives_a_clear_error(vocab, tmp_path, content):
    build_kb(vocab).to_disk(tmp_path / "kb")
    records_path = tmp_path / "kb" / RECORDS_FILE
    records_path.write_bytes(content)
    with pytest.raises(ValueError, match=re.escape(str(records_path))) as excinfo:
        MultimodalKB(spacy.blank("en").vocab).from_disk(tmp_path / "kb")
    assert type(excinfo.value) is ValueError  # not a msgpack exception subclass
    assert "Rebuild the KB" in str(excinfo.value)


def test_records_without_entities_in_the_alias_table(vocab, tmp_path):
    kb = build_kb(vocab)
    kb.to_disk(tmp_path / "kb")
    msg = srsly.read_msgpack(tmp_path / "kb" / RECORDS_FILE)
    msg["records"].append(["Q_ghost", "Ghost", "", [], 1.0])
    srsly.write_msgpack(tmp_path / "kb" / RECORDS_FILE, msg)
    with pytest.raises(ValueError, match="not in the alias table.*Q_ghost"):
        MultimodalKB(vocab).from_disk(tmp_path / "kb")


@pytest.mark.parametrize(
    "data",
    [
        b"garbage",
        b"",
        srsly.msgpack_dumps({"x": 1}),
        srsly.msgpack_dumps({"lookup": b"", "m3el": {"version": 2}}),
    ],
    ids=["garbage", "empty", "wrong-keys", "bad-records"],
)
def test_corrupted_bytes_give_a_clear_error(vocab, data):
    with pytest.raises(ValueError, match="multimodal KB") as excinfo:
        MultimodalKB(vocab).from_bytes(data)
    assert type(excinfo.value) is ValueError


# Images and fingerprints ------------------------------------------------------------


def test_resolve_image(vocab):
    kb = build_kb(vocab, image_root="/data/kb_images")
    assert kb.resolve_image("people/mj.jpg") == str(Path("/data/kb_images") / "people" / "mj.jpg")
    assert kb.resolve_image("/abs/tokyo.jpg") == "/abs/tokyo.jpg"
    assert kb.resolve_image(PNG) is PNG
    assert kb.resolve_image(PIXELS) is PIXELS
    no_root = build_kb(vocab, image_root=None)
    assert no_root.resolve_image("people/mj.jpg") == "people/mj.jpg"
    relative_root = MultimodalKB(vocab, image_root="images")
    assert relative_root.resolve_image("a.jpg") == str(Path("images") / "a.jpg")


def rebuilt(kb: MultimodalKB, kb_id: str, image_root="unchanged", **changes) -> MultimodalKB:
    """A copy of ``kb`` (in a fresh vocab) with the record ``kb_id`` changed."""
    other = MultimodalKB(
        spacy.blank("en").vocab,
        image_root=kb.image_root if image_root == "unchanged" else image_root,
    )
    for record in kb.records():
        fields = {"name": record.name, "description": record.description, "images": record.images}
        if record.kb_id == kb_id:
            fields.update(changes)
        other.add_multimodal_entity(record.kb_id, **fields)
    return other


def test_fingerprint_is_deterministic(vocab):
    kb = build_kb(vocab)
    assert kb.fingerprint() == kb.fingerprint()
    assert build_kb(spacy.blank("en").vocab).fingerprint() == kb.fingerprint()
    assert (
        rebuilt(kb, "Q1").fingerprint() == kb.fingerprint()
    )  # aliases and priors are not part of it
    assert re.fullmatch("[0-9a-f]{64}", kb.fingerprint())


@pytest.mark.parametrize(
    "kb_id,changes",
    [
        ("Q40059", {"description": "river in the Levant"}),
        ("Q41421", {"description": ""}),
        ("Q72", {"name": "Zurich"}),
        ("Q41421", {"images": ["people/mj2.jpg"]}),  # another path
        ("Q810", {"images": [PNG + b"!"]}),  # other bytes
        ("Q40059", {"images": [PIXELS + 1, "/abs/river.jpg"]}),  # other pixels
        (
            "Q40059",
            {"images": [PIXELS.reshape(1, 4, 3), "/abs/river.jpg"]},
        ),  # other shape, same bytes
        ("Q40059", {"images": ["/abs/river.jpg", PIXELS]}),  # other order
        ("Q40059", {"images": [PIXELS]}),  # an image removed
        ("Q1", {"images": [PNG]}),  # an image added
        ("Q41421", {"images": [b"people/mj.jpg"]}),  # same content, bytes instead of a path
    ],
)
def test_fingerprint_changes_with_text_and_images(vocab, kb_id, changes):
    kb = build_kb(vocab)
    assert rebuilt(kb, kb_id, **changes).fingerprint() != kb.fingerprint()


def test_fingerprint_changes_with_image_root(vocab):
    kb = build_kb(vocab, image_root="/data/kb_images")
    fingerprints = {
        kb.fingerprint(),
        rebuilt(kb, "Q1", image_root="/elsewhere").fingerprint(),
        rebuilt(kb, "Q1", image_root=None).fingerprint(),
        rebuilt(kb, "Q1", image_root="").fingerprint(),
        rebuilt(kb, "Q1", image_root="None").fingerprint(),
    }
    assert len(fingerprints) == 5


def test_fingerprint_does_not_confuse_fields(vocab):
    first, second = MultimodalKB(vocab), MultimodalKB(vocab)
    first.add_multimodal_entity("Q1", "ab", "c")
    second.add_multimodal_entity("Q1", "a", "bc")
    assert first.fingerprint() != second.fingerprint()
