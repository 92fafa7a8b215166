import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import spacy

from spacy_m3el.images import get_image
from spacy_m3el.scaleout.records import (
    RecordError,
    input_files,
    plan_shards,
    read_shard,
    record_doc,
    record_id,
)


def records(n):
    return [{"id": i, "text": f"Caption number {i}."} for i in range(n)]


def write_jsonl(path, items, blank_every=0):
    lines = []
    for i, item in enumerate(items):
        lines.append(json.dumps(item))
        if blank_every and i % blank_every == 0:
            lines.append("   ")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_jsonl_shards_cover_every_record_once_and_skip_blank_lines(tmp_path):
    path = write_jsonl(tmp_path / "news.jsonl", records(23), blank_every=4)
    shards = plan_shards([path], 5)
    assert [s.name for s in shards] == [f"news-{i:05d}" for i in range(5)]
    assert [len(s) for s in shards] == [5, 5, 5, 5, 3]
    read = [r["id"] for s in shards for r in read_shard(s)]
    assert read == list(range(23))
    assert plan_shards([path], 5) == shards  # planned from the file alone


def test_parquet_shards_read_only_their_rows_across_row_groups(tmp_path):
    path = tmp_path / "photos.parquet"
    pq.write_table(pa.Table.from_pylist(records(50)), str(path), row_group_size=7)
    shards = plan_shards([path], 12)
    assert [(s.start, s.stop) for s in shards] == [(0, 12), (12, 24), (24, 36), (36, 48), (48, 50)]
    assert [r["id"] for s in shards for r in read_shard(s)] == list(range(50))


def test_folders_expand_to_their_files_and_names_must_differ(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    write_jsonl(tmp_path / "a" / "x.jsonl", records(2))
    write_jsonl(tmp_path / "a" / "y.jsonl", records(2))
    (tmp_path / "a" / "notes.txt").write_text("ignored")
    assert [p.name for p in input_files([tmp_path / "a"])] == ["x.jsonl", "y.jsonl"]
    write_jsonl(tmp_path / "b" / "x.jsonl", records(2))
    with pytest.raises(ValueError, match="same name"):
        input_files([tmp_path / "a", tmp_path / "b"])
    with pytest.raises(ValueError, match="not found"):
        input_files([tmp_path / "missing.jsonl"])
    with pytest.raises(ValueError, match="neither .jsonl nor .parquet"):
        input_files([tmp_path / "a" / "notes.txt"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="No .jsonl or .parquet"):
        input_files([tmp_path / "empty"])
    with pytest.raises(ValueError, match="at least 1"):
        plan_shards([tmp_path / "a"], 0)


def test_a_broken_line_becomes_a_record_error_not_a_lost_document(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"id": 1, "text": "ok"}\n{oops\n[1, 2]\n{"id": 4, "text": "ok"}\n')
    (shard,) = plan_shards([path], 10)
    read = read_shard(shard)
    assert len(read) == 4
    assert isinstance(read[1], RecordError) and "not valid JSON" in str(read[1])
    assert isinstance(read[2], RecordError) and "not a JSON object" in str(read[2])
    assert record_id(read[1], 1) == "#1" and record_id(read[3], 3) == "4"


@pytest.fixture(scope="module")
def nlp():
    return spacy.blank("en")


def test_record_doc_sets_entities_and_resolves_relative_images(nlp, tmp_path):
    record = {
        "id": "a",
        "text": "Jordan won again.",
        "image": "pics/j.png",
        "entities": [{"start": 0, "end": 6, "label": "PER"}],
    }
    doc = record_doc(nlp, record, tmp_path, "image")
    assert [(e.text, e.label_) for e in doc.ents] == [("Jordan", "PER")]
    assert get_image(doc) == str(tmp_path / "pics" / "j.png")
    encoded = {"id": 1, "text": "x", "image_base64": "aGVsbG8="}
    assert get_image(record_doc(nlp, encoded, tmp_path, "image")) == b"hello"


@pytest.mark.parametrize(
    "record,message",
    [
        ({"text": "no id"}, "'id' is missing"),
        ({"id": 1}, "'text' must be a string"),
        ({"id": 1, "text": "ab c", "entities": [{"start": 0, "end": 1, "label": "X"}]}, "token"),
        ({"id": 1, "text": "a b", "entities": [{"start": 0}]}, "start, end and a string label"),
        ({"id": 1, "text": "a b", "entities": "a"}, "must be a list"),
        (
            {
                "id": 1,
                "text": "a b",
                "entities": [
                    {"start": 0, "end": 3, "label": "X"},
                    {"start": 2, "end": 3, "label": "X"},
                ],
            },
            "overlap",
        ),
        ({"id": 1, "text": "a", "image_base64": "***"}, "not valid base64"),
        ({"id": 1, "text": "a", "image": 12}, "bad image"),
        ({"id": 1, "text": "a", "image": ""}, "bad image"),
    ],
)
def test_bad_records_say_what_to_fix(nlp, tmp_path, record, message):
    with pytest.raises(RecordError, match=message):
        record_doc(nlp, record, tmp_path, "image")


def test_crlf_leading_blank_lines_and_no_final_newline(tmp_path):
    path = tmp_path / "w.jsonl"
    lines = [json.dumps(r) for r in records(5)]
    path.write_bytes(b"\r\n\r\n" + "\r\n".join(lines).encode())
    shards = plan_shards([path], 2)
    assert [len(s) for s in shards] == [2, 2, 1]
    assert [r["id"] for s in shards for r in read_shard(s)] == list(range(5))


def test_an_empty_file_has_no_shards(tmp_path):
    (tmp_path / "e.jsonl").write_text("\n\n")
    assert plan_shards([tmp_path / "e.jsonl"], 4) == []


@pytest.mark.parametrize(
    "record,message",
    [
        ({"id": True, "text": "yes"}, "'id' is missing"),
        ({"id": 1, "text": "ab c", "entities": [{"start": 3, "end": 1, "label": "X"}]}, "empty"),
        ({"id": 1, "text": "ab", "entities": [{"start": 0, "end": 9, "label": "X"}]}, "outside"),
        ({"id": 1, "text": "ab", "entities": [{"start": 0.0, "end": 2, "label": "X"}]}, "integer"),
        ({"id": 1, "text": "ab", "entities": [["start", 0]]}, "integer"),
    ],
)
def test_more_bad_records(nlp, tmp_path, record, message):
    with pytest.raises(RecordError, match=message):
        record_doc(nlp, record, tmp_path, "image")
    assert record_id({"id": True}, 3) == "#3"


def test_big_parquet_row_groups_are_named(tmp_path, caplog):
    path = tmp_path / "big.parquet"
    pq.write_table(pa.Table.from_pylist(records(40)), str(path), row_group_size=40)
    with caplog.at_level("WARNING", logger="spacy_m3el"):
        plan_shards([path], 5)
    assert "row groups of up to 40 rows" in caplog.text and "row_group_size=5" in caplog.text
