"""The HTML page: document views and the evaluation report, one self-contained file.

Every string that comes from data (texts, names, descriptions, IDs, labels,
metric names) is escaped; the page has no script and a Content-Security-Policy
that allows none, inline thumbnails and its own inline style only.
"""

from html import escape
from typing import Dict, Iterable, List, Optional, Sequence

from spacy.tokens import Doc

from .style import CSS, label_colour
from .thumbnails import DEFAULT_BUDGET, Thumbnails
from .views import DocView, SpanView, doc_views, summary, worst_errors

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
DESCRIPTION_CHARS = 160


def render(
    docs: Iterable[Doc],
    kb=None,
    *,
    top_k: int = 5,
    gold_docs: Optional[Sequence[Doc]] = None,
    page: bool = True,
    title: str = "spacy-m3el",
    image_budget: int = DEFAULT_BUDGET,
    image_attr: str = "image",
) -> str:
    """Linked docs as HTML: highlighted spans with KB IDs, the mention image, and each
    span's top-k candidates (name, description, image, probability); gold marked when
    ``gold_docs`` (the same texts with gold links) are given.

    page (bool): A whole page (True) or a fragment to embed.
    image_budget (int): Bytes of inline thumbnails at most; later ones are left out.
    """
    views = doc_views(docs, gold_docs, image_attr)
    thumbs = Thumbnails(budget=image_budget)
    body = "".join(_doc_section(view, kb, top_k, thumbs) for view in views)
    return _page(title, body + _omitted_note(thumbs)) if page else body


def render_report(
    docs: Iterable[Doc],
    gold_docs: Sequence[Doc],
    kb=None,
    *,
    metrics: Optional[Dict[str, object]] = None,
    top_k: int = 5,
    max_docs: int = 200,
    max_errors: int = 100,
    title: str = "spacy-m3el evaluation",
    image_budget: int = DEFAULT_BUDGET,
    image_attr: str = "image",
) -> str:
    """The evaluation page: metrics, a histogram of the gold's candidate rank, accuracy by
    image status, the most confused entity pairs (same-name siblings first), the worst
    errors first (each linking to its document), then the documents themselves: every
    document with an error among the ``max_errors`` worst, and the first ``max_docs``.
    """
    views = doc_views(docs, gold_docs, image_attr)
    stats = summary(views, kb)
    all_errors = worst_errors(views)
    errors = all_errors[:max_errors]
    shown_ids = {view.index for view, _ in errors} | {view.index for view in views[:max_docs]}
    shown = [view for view in views if view.index in shown_ids]
    thumbs = Thumbnails(budget=image_budget)
    parts = [
        _metrics_section(metrics or {}, stats),
        _histogram_section(stats),
        _status_section(stats),
        _confused_section(stats, kb),
        _errors_section(errors, kb, len(all_errors)),
        f"<h2>Documents ({len(shown)} of {len(views)})</h2>",
        "".join(_doc_section(view, kb, top_k, thumbs) for view in shown),
        _omitted_note(thumbs),
    ]
    return _page(title, "".join(parts))


def serve(
    docs: Iterable[Doc], kb=None, *, port: int = 5000, host: str = "0.0.0.0", **kwargs
) -> None:
    """Render ``docs`` (as :func:`render` does) and serve the page until interrupted,
    like ``displacy.serve``."""
    from http.server import BaseHTTPRequestHandler, HTTPServer

    html = render(docs, kb, **kwargs).encode("utf8")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(html)))
            self.end_headers()
            self.wfile.write(html)

    server = HTTPServer((host, port), Handler)
    print(f"Serving the spacy-m3el view on http://{host}:{server.server_port} (Ctrl-C to stop)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


# Pieces ---------------------------------------------------------------------------------


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">"
        f"<title>{_e(title)}</title><style>{CSS}</style></head>"
        f"<body><h1>{_e(title)}</h1>{body}</body></html>"
    )


def _omitted_note(thumbs: Thumbnails) -> str:
    if not thumbs.omitted:
        return ""
    return (
        f"<p class='note'>{thumbs.omitted} thumbnails were left out to keep the file under "
        f"{thumbs.budget // 1024} KiB of images.</p>"
    )


def _image(thumbs: Thumbnails, value: object, key: object, alt: str) -> str:
    uri, reason = thumbs.uri(value, key)
    if uri is None:
        return f"<span class='noimg'>{_e(reason)}</span>"
    return f"<img class='thumb' src='{uri}' alt='{_e(alt)}'>"


def _marked_text(view: DocView) -> str:
    out: List[str] = []
    position = 0
    for span in sorted(view.spans, key=lambda s: s.start):
        out.append(_e(view.text[position : span.start]))
        verdict = {True: " right", False: " wrong", None: ""}[span.correct]
        out.append(
            f"<mark class='ent{verdict}' style='background:{label_colour(span.label)}'>"
            f"{_e(view.text[span.start : span.end])}"
            f"<span class='label'>{_e(span.label)}</span>"
            f"<span class='kbid'>{_e(span.kb_id)}</span></mark>"
        )
        position = span.end
    out.append(_e(view.text[position:]))
    return "".join(out)


def _doc_section(view: DocView, kb, top_k: int, thumbs: Thumbnails) -> str:
    image = (
        _image(thumbs, view.image, None, "mention image")
        if view.image is not None
        else (f"<span class='noimg'>image: {_e(view.image_status)}</span>")
    )
    wrong = " has-error" if view.errors else ""
    spans = "".join(_candidates_table(span, kb, top_k, thumbs) for span in view.spans)
    return (
        f"<section class='doc{wrong}' id='doc-{view.index}'>"
        f"<div class='docimg'>{image}</div><div class='docbody'>"
        f"<h3>Document {view.index}</h3><p class='text'>{_marked_text(view)}</p>"
        f"{spans}</div></section>"
    )


def _candidates_table(span: SpanView, kb, top_k: int, thumbs: Thumbnails) -> str:
    rows = []
    shown: List = list(enumerate(span.candidates[:top_k], start=1))
    if span.has_gold and span.gold not in [k for _, (k, _) in shown]:
        shown.append((None, (span.gold, None)))  # the gold, not among the candidates
    for rank, (kb_id, probability) in shown:
        name, description, image = _entity(kb, kb_id, thumbs)
        gold = " gold" if span.has_gold and kb_id == span.gold else ""
        chosen = " chosen" if kb_id == span.kb_id else ""
        width = 0.0 if probability is None else max(0.0, min(1.0, probability)) * 100
        score = "not a candidate" if probability is None else f"{probability:.3f}"
        rows.append(
            f"<tr class='cand{gold}{chosen}'><td>{'-' if rank is None else rank}"
            f"</td><td>{image}</td><td><b>{_e(name)}</b> <code>{_e(kb_id)}</code>"
            f"{' <span class=goldtag>gold</span>' if gold else ''}"
            f"<div class='desc'>{_e(description)}</div></td>"
            f"<td class='score'><div class='bar' style='width:{width:.1f}%'></div>"
            f"{_e(score)}</td></tr>"
        )
    head = (
        f"<div class='span'><div class='spanhead'>{_e(span.label)} → <code>{_e(span.kb_id)}</code>"
    )
    if span.has_gold:
        head += f" · gold <code>{_e(span.gold)}</code>"
    return head + "</div><table class='cands'>" + "".join(rows) + "</table></div>"


def _entity(kb, kb_id: str, thumbs: Thumbnails):
    if kb is None or not kb.has_record(kb_id):
        return kb_id, "", "<span class='noimg'>not in the KB</span>"
    record = kb.get_record(kb_id)
    description = record.description
    if len(description) > DESCRIPTION_CHARS:
        description = description[: DESCRIPTION_CHARS - 1] + "…"
    image_value = kb.resolve_image(record.images[0]) if record.images else None
    return record.name, description, _image(thumbs, image_value, ("kb", kb_id), record.name)


FULL_KB_KEYS = ("mrr", "hits@1", "hits@3", "hits@5", "hits@10", "mean_rank", "n_entities")
CANDIDATE_KEYS = ("nel_micro_p", "nel_micro_r", "nel_micro_f", "nel_mrr", "nel_hits@1")


def _metrics_section(metrics: Dict[str, object], stats: Dict[str, object]) -> str:
    rows = [("mentions with a gold link", stats["n"])]
    if stats["accuracy"] is not None:
        rows.append(("linked correctly (this page)", f"{stats['accuracy'] * 100:.2f}%"))
    precision = metrics.get("entity_precision", "")
    for key in FULL_KB_KEYS:
        if key in metrics:
            label = f"full-KB {key}" if key == "n_entities" else f"full-KB {key} {precision}"
            rows.append((label.strip(), _number(key, metrics[key])))
    candidates = metrics.get("candidates") or {}
    for key in CANDIDATE_KEYS:
        if isinstance(candidates.get(key), (int, float)):
            rows.append((f"candidate mode {key}", _number(key, candidates[key])))
    cells = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    return f"<h2>Metrics</h2><table class='metrics'>{cells}</table>"


def _number(key: str, value: object) -> str:
    if key in ("n_entities", "n_mentions"):
        return str(int(float(value)))
    if key == "mean_rank":
        return f"{float(value):.2f}"
    return f"{float(value) * 100:.2f}%"


def _histogram_section(stats: Dict[str, object]) -> str:
    histogram = stats["rank_histogram"]
    peak = max([count for _, count in histogram] + [1])
    rows = "".join(
        f"<tr><th>{_e(bucket)}</th><td><span class='hbar' style='width:{count / peak * 80:.1f}%'>"
        f"</span>{count}</td></tr>"
        for bucket, count in histogram
    )
    return (
        f"<h2>Rank of the gold entity among the candidates</h2><table class='hist'>{rows}</table>"
    )


def _status_section(stats: Dict[str, object]) -> str:
    rows = "".join(
        f"<tr><th>{_e(status)}</th><td>{correct}/{total} ({correct / total * 100:.1f}%)</td></tr>"
        for status, (correct, total) in stats["by_image_status"].items()
    )
    return f"<h2>Accuracy by mention image status</h2><table class='metrics'>{rows}</table>"


def _confused_section(stats: Dict[str, object], kb, limit: int = 20) -> str:
    def named(kb_id: str) -> str:
        name = kb.get_record(kb_id).name if kb is not None and kb.has_record(kb_id) else ""
        return f"{_e(name)} <code>{_e(kb_id)}</code>"

    rows = "".join(
        f"<tr><td>{named(gold)}</td><td>{named(pred)}</td><td>{count}</td>"
        f"<td>{'same name' if same else ''}</td></tr>"
        for gold, pred, count, same in stats["confused"][:limit]
    )
    head = "<tr><th>gold</th><th>linked instead</th><th>times</th><th></th></tr>"
    return f"<h2>Most confused entities</h2><table class='metrics'>{head}{rows}</table>"


def _errors_section(errors, kb, total: int) -> str:
    items = []
    for view, span in errors:
        mention = view.text[span.start : span.end]
        rank = span.gold_rank if span.gold_rank is not None else "not a candidate"
        items.append(
            f"<li><a href='#doc-{view.index}'>Document {view.index}</a>: "
            f"<b>{_e(mention)}</b> linked to <code>{_e(span.kb_id)}</code>, gold "
            f"<code>{_e(span.gold)}</code> (gold rank {_e(rank)})</li>"
        )
    return (
        f"<h2>Worst errors first ({len(errors)} of {total})</h2>"
        f"<ol class='errors'>{''.join(items)}</ol>"
    )
