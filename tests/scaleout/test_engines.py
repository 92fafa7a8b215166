import io
import subprocess
import sys

import pytest

from spacy_m3el.pipeline.linker import M3ELLinker
from spacy_m3el.scaleout.engines import CorpusJob, Progress, format_summary, run_corpus_job
from spacy_m3el.scaleout.output import (
    ShardCounts,
    finished_shards,
    output_counts,
    read_errors,
    read_links,
    shard_path,
)

from ..util import ENTITIES
from .corpus import assert_close_links, caption_records, write_jsonl


def run(model, inputs, output, **settings):
    stream = io.StringIO()
    counts = run_corpus_job(CorpusJob(model, inputs, output, **settings), stream=stream)
    return counts, stream.getvalue()


@pytest.fixture(scope="module")
def local_links(corpus_model, captions, tmp_path_factory):
    output = tmp_path_factory.mktemp("links") / "out"
    counts, log = run(corpus_model, [captions], output, shard_size=10, batch_size=4, top_k=3)
    return output, counts, log


def test_every_document_is_linked_once(local_links):
    output, counts, log = local_links
    assert "5 shards, 0 finished earlier, 5 to link" in log
    assert finished_shards(output) == [f"captions-{i:05d}" for i in range(5)]
    rows = read_links(output)
    assert counts == ShardCounts(shards=5, docs=48, mentions=48, nil=0, unreadable_images=0)
    assert sorted(r["doc_id"] for r in rows) == sorted(f"doc{i}" for i in range(48))
    assert all(row["doc_id"] == f"doc{row['record']}" for row in rows)
    kb_ids = {e[0] for e in ENTITIES}
    for row in rows:
        scores = [c["score"] for c in row["candidates"]]
        assert len(scores) == 3 and scores == sorted(scores, reverse=True)
        assert row["kb_id"] == row["candidates"][0]["kb_id"] and row["kb_id"] in kb_ids
        assert row["text"] in {e[1] for e in ENTITIES} and row["start_char"] == 0
    statuses = {r["doc_id"]: r["image_status"] for r in rows}
    assert statuses["doc0"] == "ok" and statuses["doc1"] == "ok" and statuses["doc2"] == "none"
    summary = format_summary(counts, output, 1.0)
    assert "Linked 48 docs in 5 shards" in summary and "docs failed: 0" in summary


def test_given_entities_are_kept_and_the_ner_finds_the_others(corpus_model, tmp_path):
    records = caption_records(4, tmp_path / "images")
    records[0]["entities"][0]["label"] = "GIVEN"
    path = write_jsonl(tmp_path / "c.jsonl", records)
    run(corpus_model, [path], tmp_path / "out")
    labels = {r["doc_id"]: r["label"] for r in read_links(tmp_path / "out")}
    assert labels == {"doc0": "GIVEN", "doc1": "ENT", "doc2": "ENT", "doc3": "ENT"}


def test_bad_records_and_unreadable_images_are_reported_not_dropped(corpus_model, tmp_path):
    records = caption_records(6, tmp_path / "images")
    records[1] = {"id": "doc1", "text": 5}
    records[2]["image"] = "images/missing.png"
    path = write_jsonl(tmp_path / "c.jsonl", records, extra_lines=["{broken"])
    counts, _ = run(corpus_model, [path], tmp_path / "out", shard_size=4)
    assert counts.docs == 7 and counts.errors == 2 and counts.unreadable_images == 1
    errors = read_errors(tmp_path / "out")
    assert [(e["doc_id"], e["record"]) for e in errors] == [("doc1", 1), ("#6", 6)]
    assert "'text' must be a string" in errors[0]["reason"]
    assert "not valid JSON" in errors[1]["reason"]
    (row,) = [r for r in read_links(tmp_path / "out") if r["doc_id"] == "doc2"]
    assert row["image_status"] == "unreadable" and "not found" in row["image_error"]
    assert row["kb_id"] != "NIL"  # linked from its text


def test_a_document_the_pipeline_fails_on_is_isolated(corpus_model, tmp_path, monkeypatch):
    records = caption_records(6, tmp_path / "images")
    records[3]["text"] = records[3]["text"].replace("news", "explode")
    predict = M3ELLinker.predict

    def failing(self, docs):
        docs = list(docs)
        if any("explode" in doc.text for doc in docs):
            raise RuntimeError("cannot link this")
        return predict(self, docs)

    monkeypatch.setattr(M3ELLinker, "predict", failing)
    path = write_jsonl(tmp_path / "c.jsonl", records)
    counts, _ = run(corpus_model, [path], tmp_path / "out", batch_size=6)
    (error,) = read_errors(tmp_path / "out")
    assert error["doc_id"] == "doc3"
    assert error["reason"] == "pipeline failed: RuntimeError: cannot link this"
    assert counts.docs == 6 and counts.mentions == 5
    assert sorted(r["doc_id"] for r in read_links(tmp_path / "out")) == [
        f"doc{i}" for i in (0, 1, 2, 4, 5)
    ]


def test_a_rerun_links_only_the_unfinished_shards(corpus_model, captions, local_links, tmp_path):
    output, _, _ = local_links
    copy = tmp_path / "out"
    copy.mkdir()
    for item in output.iterdir():
        if item.is_file():
            (copy / item.name).write_bytes(item.read_bytes())
    shard_path(copy, "captions-00002").unlink()
    (copy / f".captions-00002.parquet.{'ab' * 16}.tmp").write_bytes(b"half written")
    (copy / ".notes.tmp").write_text("not ours: kept")
    counts, log = run(corpus_model, [captions], copy, shard_size=10, batch_size=4, top_k=3)
    assert "5 shards, 4 finished earlier, 1 to link" in log
    assert read_links(copy) == read_links(output)
    assert counts == output_counts(output)
    assert [p.name for p in copy.glob(".*.tmp")] == [".notes.tmp"]


def test_other_settings_are_refused_rather_than_mixed(corpus_model, captions, local_links):
    output, _, _ = local_links
    with pytest.raises(ValueError, match="other settings .*shard_size"):
        run(corpus_model, [captions], output, shard_size=7, top_k=3)


def test_spacy_multiprocessing_gives_the_same_rows(corpus_model, captions, local_links, tmp_path):
    output, _, _ = local_links
    run(
        corpus_model,
        [captions],
        tmp_path / "out",
        shard_size=10,
        batch_size=4,
        top_k=3,
        n_process=2,
    )
    assert_close_links(read_links(tmp_path / "out"), read_links(output))


def test_unknown_engine_is_refused(corpus_model, captions, tmp_path):
    with pytest.raises(ValueError, match="Unknown engine 'spark'"):
        run(corpus_model, [captions], tmp_path / "out", engine="spark")


def test_progress_prints_docs_per_second():
    stream = io.StringIO()
    progress = Progress(2, stream)
    progress.update(ShardCounts(shards=1, docs=10))
    progress.update(ShardCounts(shards=1, docs=5))
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("1/2 shards, 10 docs,") and lines[0].endswith("docs/s")
    assert lines[-1].startswith("2/2 shards, 15 docs,")


def test_importing_and_linking_locally_never_imports_ray(corpus_model, captions, tmp_path):
    code = (
        "import sys, io\n"
        "from pathlib import Path\n"
        "import spacy_m3el, spacy_m3el.cli\n"
        "from spacy_m3el.scaleout.engines import CorpusJob, run_corpus_job\n"
        f"run_corpus_job(CorpusJob(Path({str(corpus_model)!r}), [Path({str(captions)!r})], "
        f"Path({str(tmp_path / 'out')!r})), stream=io.StringIO())\n"
        "assert not [m for m in sys.modules if m == 'ray' or m.startswith('ray.')]\n"
        "assert 'pyarrow' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_parquet_with_image_bytes_links_like_jsonl(corpus_model, tmp_path):
    import base64

    import pyarrow as pa
    import pyarrow.parquet as pq

    records = caption_records(6, tmp_path / "images")
    jsonl = write_jsonl(tmp_path / "c.jsonl", records)
    rows = []
    for record in records:
        row = {k: v for k, v in record.items() if k != "image_base64"}
        if "image_base64" in record:
            row["image"] = base64.b64decode(record["image_base64"])
        elif "image" in record:
            row["image"] = (tmp_path / record["image"]).read_bytes()
        rows.append({k: row.get(k) for k in ("id", "text", "image", "entities")})
    table = pa.Table.from_pylist(rows)
    pq.write_table(table, str(tmp_path / "p.parquet"), row_group_size=2)
    run(corpus_model, [jsonl], tmp_path / "a", shard_size=4)
    run(corpus_model, [tmp_path / "p.parquet"], tmp_path / "b", shard_size=4)
    assert read_links(tmp_path / "b") == read_links(tmp_path / "a")


def test_an_empty_input_and_a_finished_output_link_nothing(corpus_model, tmp_path):
    (tmp_path / "e.jsonl").write_text("")
    counts, log = run(corpus_model, [tmp_path / "e.jsonl"], tmp_path / "out")
    assert counts == ShardCounts() and "0 shards" in log
    path = write_jsonl(tmp_path / "c.jsonl", caption_records(3, tmp_path / "images"))
    run(corpus_model, [path], tmp_path / "out2")
    counts, log = run(corpus_model, [path], tmp_path / "out2")
    assert "1 finished earlier, 0 to link" in log and counts.docs == 3


@pytest.mark.parametrize(
    "settings,message",
    [({"top_k": 0}, "top_k must be at least 1"), ({"gpus_per_worker": -1}, "negative")],
)
def test_bad_settings_fail_before_the_output_is_claimed(
    corpus_model, captions, tmp_path, settings, message
):
    with pytest.raises(ValueError, match=message):
        run(corpus_model, [captions], tmp_path / "out", **settings)
    assert not (tmp_path / "out").exists()


def test_an_output_folder_that_is_an_input_is_refused(corpus_model, tmp_path):
    write_jsonl(tmp_path / "c.jsonl", caption_records(2, tmp_path / "images"))
    with pytest.raises(ValueError, match="is also an input"):
        run(corpus_model, [tmp_path], tmp_path)


def test_a_changed_input_is_not_resumed(corpus_model, tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", caption_records(3, tmp_path / "images"))
    run(corpus_model, [path], tmp_path / "out")
    write_jsonl(path, caption_records(5, tmp_path / "images"))
    with pytest.raises(ValueError, match="other settings .*inputs"):
        run(corpus_model, [path], tmp_path / "out")


def test_a_broken_pipeline_leaves_the_shard_unwritten(corpus_model, tmp_path, monkeypatch):
    from spacy_m3el.scaleout.linking import ShardFailed

    def broken(self, docs):
        raise RuntimeError("model on a dead device")

    monkeypatch.setattr(M3ELLinker, "predict", broken)
    path = write_jsonl(tmp_path / "c.jsonl", caption_records(4, tmp_path / "images"))
    with pytest.raises(ShardFailed, match="all 2 documents"):
        run(corpus_model, [path], tmp_path / "out")
    assert finished_shards(tmp_path / "out") == []


def test_a_text_longer_than_max_length_is_a_bad_record(corpus_model, tmp_path):
    import spacy

    from spacy_m3el.scaleout.linking import ShardLinker
    from spacy_m3el.scaleout.records import plan_shards

    nlp = spacy.load(corpus_model)
    nlp.max_length = 60
    records = caption_records(2, tmp_path / "images")
    records[1]["text"] = "Kastrel " * 20
    path = write_jsonl(tmp_path / "c.jsonl", records)
    (shard,) = plan_shards([path], 10)
    result = ShardLinker(nlp, "m3el_linker").link_shard(shard)
    assert [r["doc_id"] for r in result.rows] == ["doc0"]
    assert result.errors[0]["doc_id"] == "doc1" and "max_length" in result.errors[0]["reason"]


def test_a_shard_that_keeps_killing_its_worker_is_given_up(corpus_model, captions, tmp_path):
    """The Ray actor's attempt guard, run in this process (no Ray needed)."""
    import numpy

    from spacy_m3el.scaleout.linking import ShardFailed
    from spacy_m3el.scaleout.ray_engine import ShardActor, count_attempt
    from spacy_m3el.scaleout.records import plan_shards

    shard = plan_shards([captions], 10)[0]
    batch = {k: numpy.array([v]) for k, v in shard.__dict__.items()}
    settings = {"batch_size": 4, "top_k": 3, "use_gpu": False, "max_attempts": 2}
    actor = ShardActor(str(corpus_model), None, str(tmp_path), settings)
    assert actor(batch)["docs"] == [10]  # attempt 1
    assert count_attempt(tmp_path, shard.name) == 2  # as if its worker had died once more
    with pytest.raises(ShardFailed, match="started 2 times"):
        actor(batch)
