"""Linking one input shard: records to documents, documents to rows, failures to errors.

:class:`ShardLinker` is what every engine runs: the local engine in its own
process, the Ray engine once per actor. A record that cannot become a
document (no text, entity offsets off token boundaries, an image value of a
wrong type) and a document on which the pipeline raises are reported in the
shard's errors with the reason; the other documents of its batch are linked
as usual. An image that cannot be read is no error: the linker links that
document from its text and the rows say why (``image_status`` "unreadable",
``image_error``).
"""

import os
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from spacy.language import Language
from spacy.tokens import Doc

from ..images import STATUS_ATTR, STATUS_UNREADABLE
from ..kb import NIL
from ..scoring import CANDIDATES_ATTR
from .output import ShardCounts, ShardResult
from .records import InputShard, RecordError, has_entities, read_shard, record_doc, record_id

Indexed = List[Tuple[int, Any, Doc]]  # (record number in its file, record, its doc)


class ShardLinker:
    """Links the records of input shards with a loaded pipeline.

    nlp (Language): A pipeline with an ``m3el_linker``.
    linker_name (str): The linker's component name.
    batch_size (int): Documents per ``nlp.pipe`` batch.
    top_k (int): Candidates kept per mention.
    n_process (int): Processes of ``nlp.pipe`` (spaCy's multiprocessing).
    """

    def __init__(
        self,
        nlp: Language,
        linker_name: str,
        *,
        batch_size: int = 64,
        top_k: int = 5,
        n_process: int = 1,
    ):
        if batch_size < 1 or top_k < 1 or n_process < 1:
            raise ValueError("batch_size, top_k and n_process must be at least 1.")
        self.nlp = nlp
        self.image_attr = nlp.get_pipe(linker_name).image_attr
        self.batch_size = batch_size
        self.top_k = top_k
        self.n_process = n_process
        # With entities given, components that would set doc.ents (the NER) do not run.
        self.ents_setters = [
            name for name in nlp.pipe_names if "doc.ents" in nlp.get_pipe_meta(name).assigns
        ]

    def link_shard(self, shard: InputShard) -> ShardResult:
        """The rows, failed documents and counts of one input shard.

        RAISES (ShardFailed): The pipeline failed on every document of a group of
            several (a broken pipeline, not bad documents): nothing is written, so
            the shard is retried by the next run.
        """
        result = ShardResult(shard.name)
        base_dir = Path(shard.path).parent
        given: Indexed = []
        found: Indexed = []
        ids: Dict[int, str] = {}
        failures: Dict[int, str] = {}
        for position, record in enumerate(read_shard(shard)):
            index = shard.start + position
            ids[index] = record_id(record, index)
            try:
                doc = self._doc(record, base_dir)
            except MemoryError:
                raise
            except Exception as err:  # noqa: BLE001 - reported in the errors file
                failures[index] = f"bad record: {_reason(err)}"
                continue
            (given if has_entities(record) else found).append((index, record, doc))
        linked: Dict[int, Doc] = {}
        for items, disable in ((given, self.ents_setters), (found, [])):
            done, failed = self._process(items, base_dir, disable)
            linked.update(done)
            failures.update(failed)
        for index in sorted(ids):
            if index in failures:
                result.errors.append(
                    {"doc_id": ids[index], "record": index, "reason": failures[index]}
                )
            else:
                result.rows.extend(mention_rows(ids[index], index, linked[index], self.top_k))
        result.counts = _counts(result, linked.values())
        return result

    def _doc(self, record: Any, base_dir: Path) -> Doc:
        return record_doc(self.nlp, record, base_dir, self.image_attr)

    def _process(
        self, items: Indexed, base_dir: Path, disable: Sequence[str]
    ) -> Tuple[Dict[int, Doc], Dict[int, str]]:
        """Run the pipeline over the documents; if a batch raises, find the documents
        that fail by running fresh copies (made again from the records) one at a time."""
        if not items:
            return {}, {}
        docs = [doc for _, _, doc in items]
        try:
            out = self.nlp.pipe(
                docs, batch_size=self.batch_size, disable=disable, n_process=self.n_process
            )
            return {item[0]: doc for item, doc in zip(items, out, strict=True)}, {}
        except MemoryError:
            raise
        except Exception:  # noqa: BLE001 - isolated below, each failure reported
            pass
        done: Dict[int, Doc] = {}
        failed: Dict[int, str] = {}
        for index, record, _ in items:
            try:
                doc = self._doc(record, base_dir)
                done[index] = next(iter(self.nlp.pipe([doc], disable=disable)))
            except MemoryError:
                raise
            except Exception as err:  # noqa: BLE001 - reported in the errors file
                failed[index] = f"pipeline failed: {_reason(err)}"
        if len(items) > 1 and not done:
            raise ShardFailed(
                f"the pipeline failed on all {len(items)} documents of a group "
                f"(first: {next(iter(failed.values()))}); the shard is left for a rerun"
            )
        return done, failed


class ShardFailed(RuntimeError):
    """The pipeline itself failed (on every document tried), not a document."""


def _reason(err: Exception) -> str:
    return f"{type(err).__name__}: {err}" if not isinstance(err, RecordError) else str(err)


def mention_rows(doc_id: str, record: int, doc: Doc, top_k: int) -> List[Dict[str, Any]]:
    """One output row per entity of a linked document (see ``output.COLUMNS``).

    record (int): The document's record number in its input file (which tells apart
        documents that share an ID).
    """
    status = doc._.get(STATUS_ATTR) if doc.has_extension(STATUS_ATTR) else None
    image_status, _, image_error = (status or "").partition(": ")
    rows = []
    for ent in doc.ents:
        ranking = ent._.get(CANDIDATES_ATTR) if ent.has_extension(CANDIDATES_ATTR) else None
        ranking = ranking or []
        rows.append(
            {
                "doc_id": doc_id,
                "record": record,
                "start_char": ent.start_char,
                "end_char": ent.end_char,
                "text": ent.text,
                "label": ent.label_,
                "kb_id": ent.kb_id_ or NIL,
                "score": float(ranking[0][1]) if ranking else None,
                "candidates": [
                    {"kb_id": kb_id, "score": float(score)} for kb_id, score in ranking[:top_k]
                ],
                "image_status": image_status or None,
                "image_error": image_error or None,
            }
        )
    return rows


def _counts(result: ShardResult, docs) -> ShardCounts:
    docs = list(docs)
    unreadable = sum(
        1
        for doc in docs
        if doc.has_extension(STATUS_ATTR)
        and (doc._.get(STATUS_ATTR) or "").startswith(STATUS_UNREADABLE)
    )
    return ShardCounts(
        shards=1,
        docs=len(docs) + len(result.errors),
        mentions=len(result.rows),
        nil=sum(1 for row in result.rows if row["kb_id"] == NIL),
        unreadable_images=unreadable,
        errors=len(result.errors),
    )


def timed_link(linker: ShardLinker, shard: InputShard) -> Tuple[ShardResult, float]:
    """``link_shard`` and the seconds it took."""
    start = time.perf_counter()
    result = linker.link_shard(shard)
    return result, time.perf_counter() - start


def load_pipeline(model: Any, component: Optional[str], use_gpu: bool = False) -> Tuple[Any, Any]:
    """A saved pipeline (on the GPU if asked) and its m3el_linker."""
    import spacy

    from ..evaluation import find_linker

    if use_gpu:
        spacy.require_gpu()
    nlp = spacy.load(model)
    return nlp, find_linker(nlp, component)


def load_shard_linker(
    model: Path, component: Optional[str], **settings: Any
) -> Tuple[ShardLinker, Any]:
    """Load a pipeline and its linker; a ShardLinker over it, and the linker component."""
    if settings.get("n_process", 1) > 1:
        # Set before a fast tokenizer runs, else each forked child warns about it.
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    nlp, linker = load_pipeline(model, component)
    return ShardLinker(nlp, linker.name, **settings), linker
