"""The HTML view: what it shows, escaping of every data string, the size cap, the CLI."""

import base64
import io
import re

from PIL import Image

from spacy_m3el.visualize import render, render_report
from spacy_m3el.visualize.views import doc_views, summary, worst_errors

from .conftest import ATTRIBUTE, SCRIPT


def test_render_shows_spans_kb_ids_candidates_and_images(kb_and_docs):
    kb, docs, _ = kb_and_docs
    html = render(docs, kb, top_k=5)
    assert html.startswith("<!DOCTYPE html>")
    assert html.count("<section class='doc") == 3
    assert "basketball player" in html and "<code>Q1</code>" in html
    assert "image: none" in html  # the second doc has no image
    assert "unreadable" in html  # the third doc's bytes and Q3's image do not decode
    for uri in re.findall(r"src='data:image/jpeg;base64,([^']+)'", html):
        assert Image.open(io.BytesIO(base64.b64decode(uri))).size[0] > 0
    assert "0.600" in html and "width:60.0%" in html  # score bars
    fragment = render(docs[:1], kb, page=False)
    assert not fragment.startswith("<!DOCTYPE") and "Document 0" in fragment


def test_every_data_string_is_escaped_and_the_page_has_no_script(kb_and_docs):
    kb, docs, gold_docs = kb_and_docs
    for html in (render(docs, kb), render_report(docs, gold_docs, kb)):
        assert "<script" not in html.lower()
        assert "onerror=" not in html.replace("onerror=&quot;", "")
        assert "&lt;script&gt;window.parent.__pwned = 1&lt;/script&gt;" in html
        assert "&quot;&gt;&lt;img src=x onerror=&quot;" in html
        assert "Content-Security-Policy" in html and "default-src 'none'" in html
    assert SCRIPT not in render(docs, kb) and ATTRIBUTE not in render(docs, kb)


def test_report_marks_gold_and_errors_and_summarizes(kb_and_docs):
    kb, docs, gold_docs = kb_and_docs
    metrics = {"mrr": 0.5, "hits@1": 0.4, "mean_rank": 2.5, "entity_precision": "float32"}
    html = render_report(docs, gold_docs, kb, metrics=metrics)
    assert "full-KB hits@1 float32" in html and "40.00%" in html and "2.50" in html
    assert html.count("class='doc has-error'") == 2 and "mark class='ent right'" in html
    assert "goldtag" in html and "not a candidate" in html  # doc 2's gold Q2 is no candidate
    assert "href='#doc-1'" in html and "id='doc-1'" in html
    views = doc_views(docs, gold_docs)
    stats = summary(views, kb)
    assert stats["n"] == 3 and abs(stats["accuracy"] - 1 / 3) < 1e-9
    assert dict(stats["rank_histogram"])["2"] == 1
    assert dict(stats["rank_histogram"])["not a candidate"] == 1
    assert stats["by_image_status"] == {"none": (0, 1), "ok": (1, 1), "unreadable": (0, 1)}
    assert stats["confused"][0] == ("Q2", "Q1", 1, True)  # the same-name sibling first
    worst = worst_errors(views)
    assert [view.index for view, _ in worst] == [2, 1]  # gold not a candidate is worst


def test_thumbnails_stop_at_the_size_cap(kb_and_docs):
    kb, docs, _ = kb_and_docs
    full = render(docs, kb)
    sizes = sorted({len(u) for u in re.findall(r"data:image/jpeg;base64,[^']+", full)})
    budget = sizes[0] + 1  # room for one thumbnail (one use of it) only
    html = render(docs, kb, image_budget=budget)
    assert "left out to keep the file under" in html and "report size cap" in html
    assert len(re.findall(r"data:image/jpeg;base64,([^']+)", html)) == 1


def test_serve_answers_with_the_rendered_page(kb_and_docs):
    import socket
    import threading
    import time
    import urllib.request

    from spacy_m3el.visualize import serve

    kb, docs, _ = kb_and_docs
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    thread = threading.Thread(
        target=serve, args=(docs, kb), kwargs={"port": port, "host": "127.0.0.1"}, daemon=True
    )
    thread.start()
    for _ in range(50):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                page = response.read().decode("utf8")
            break
        except OSError:
            time.sleep(0.1)
    assert page == render(docs, kb)


def test_gold_docs_must_match_the_docs(kb_and_docs):
    import pytest

    kb, docs, gold_docs = kb_and_docs
    with pytest.raises(ValueError, match="same texts as docs"):
        render_report(docs, gold_docs[:2], kb)
