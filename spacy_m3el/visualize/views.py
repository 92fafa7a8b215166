"""What the page shows, gathered from linked docs: one view per document and span."""

from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from spacy.tokens import Doc

from ..images import STATUS_ATTR, ImageLoadError, get_image, load_image
from ..kb import NIL
from ..scoring import CANDIDATES_ATTR


@dataclass
class SpanView:
    """One entity span: what the linker chose, its candidates, and the gold if known."""

    start: int
    end: int
    label: str
    kb_id: str
    candidates: List[Tuple[str, float]]
    gold: Optional[str] = None

    @property
    def has_gold(self) -> bool:
        return bool(self.gold) and self.gold != NIL

    @property
    def correct(self) -> Optional[bool]:
        return None if not self.has_gold else self.kb_id == self.gold

    @property
    def gold_rank(self) -> Optional[int]:
        """1-based rank of the gold among the candidates (None: not among them or no gold)."""
        ids = [kb_id for kb_id, _ in self.candidates]
        return ids.index(self.gold) + 1 if self.has_gold and self.gold in ids else None


@dataclass
class DocView:
    """One document: its text, image and spans."""

    index: int
    text: str
    image: object
    image_status: str
    spans: List[SpanView] = field(default_factory=list)

    @property
    def errors(self) -> List[SpanView]:
        return [span for span in self.spans if span.correct is False]


def doc_views(
    docs: Iterable[Doc],
    gold_docs: Optional[Sequence[Doc]] = None,
    image_attr: str = "image",
) -> List[DocView]:
    """Views of linked docs; ``gold_docs`` (same texts) give the gold KB ID of each span."""
    views = []
    docs = list(docs)
    golds = list(gold_docs) if gold_docs is not None else None
    if golds is not None and [d.text for d in golds] != [d.text for d in docs]:
        raise ValueError(
            f"gold_docs must be the same texts as docs, in the same order ({len(golds)} gold "
            f"docs for {len(docs)} docs)."
        )
    for i, doc in enumerate(docs):
        gold = _gold_by_offsets(golds[i]) if golds is not None else {}
        image = get_image(doc, image_attr)
        status = doc._.get(STATUS_ATTR) if doc.has_extension(STATUS_ATTR) else None
        view = DocView(i, doc.text, image, status or _image_status(image))
        for ent in doc.ents:
            candidates = ent._.get(CANDIDATES_ATTR) if ent.has_extension(CANDIDATES_ATTR) else None
            view.spans.append(
                SpanView(
                    ent.start_char,
                    ent.end_char,
                    ent.label_,
                    ent.kb_id_ or NIL,
                    [(str(k), float(p)) for k, p in (candidates or [])],
                    gold.get((ent.start_char, ent.end_char)),
                )
            )
        views.append(view)
    return views


def _image_status(image: object) -> str:
    """The status the linker would give (for docs it has not annotated)."""
    if image is None:
        return "none"
    try:
        load_image(image)
    except ImageLoadError as err:
        return f"unreadable: {err}"
    return "ok"


def _gold_by_offsets(doc: Doc) -> Dict[Tuple[int, int], str]:
    return {(ent.start_char, ent.end_char): ent.kb_id_ for ent in doc.ents}


def summary(views: Sequence[DocView], kb=None) -> Dict[str, object]:
    """What the evaluation view reports, from the spans with a gold link.

    RETURNS (Dict[str, object]): ``n``, ``accuracy``, ``rank_histogram`` (candidate rank
        of the gold: "1".."5", "6-10", ">10", "not a candidate"), ``by_image_status``
        ({status: (correct, total)}) and ``confused`` ([(gold, predicted, count,
        same_name)], same-name siblings first, then by count).
    """
    spans = [(view, span) for view in views for span in view.spans if span.has_gold]
    histogram: Counter = Counter()
    by_status: Dict[str, List[int]] = {}
    confused: Counter = Counter()
    for view, span in spans:
        histogram[_rank_bucket(span.gold_rank)] += 1
        counts = by_status.setdefault(view.image_status.split(":")[0], [0, 0])
        counts[0] += int(bool(span.correct))
        counts[1] += 1
        if not span.correct:
            confused[(span.gold, span.kb_id)] += 1
    name = _namer(kb)
    pairs = [
        (gold, pred, count, name(gold) is not None and name(gold) == name(pred))
        for (gold, pred), count in confused.items()
    ]
    pairs.sort(key=lambda p: (not p[3], -p[2], p[0], p[1]))
    correct = sum(int(bool(span.correct)) for _, span in spans)
    return {
        "n": len(spans),
        "accuracy": correct / len(spans) if spans else None,
        "rank_histogram": [(bucket, histogram.get(bucket, 0)) for bucket in RANK_BUCKETS],
        "by_image_status": {k: tuple(v) for k, v in sorted(by_status.items())},
        "confused": pairs,
    }


RANK_BUCKETS = ("1", "2", "3", "4", "5", "6-10", ">10", "not a candidate")


def _rank_bucket(rank: Optional[int]) -> str:
    if rank is None:
        return "not a candidate"
    if rank <= 5:
        return str(rank)
    return "6-10" if rank <= 10 else ">10"


def _namer(kb):
    def name(kb_id: Optional[str]) -> Optional[str]:
        if kb is None or not kb_id or not kb.has_record(kb_id):
            return None
        return kb.get_record(kb_id).name

    return name


def worst_errors(views: Sequence[DocView]) -> List[Tuple[DocView, SpanView]]:
    """Wrong links, worst first: gold not among the candidates, then by the gold's rank
    (lower is better), then by the confidence in the wrong answer."""
    errors = [(view, span) for view in views for span in view.errors]

    def badness(item: Tuple[DocView, SpanView]):
        _, span = item
        rank = span.gold_rank if span.gold_rank is not None else 10**9
        confidence = span.candidates[0][1] if span.candidates else 0.0
        return (-rank, -confidence)

    return sorted(errors, key=badness)
