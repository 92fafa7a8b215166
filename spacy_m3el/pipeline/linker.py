"""The ``m3el_linker`` component: multimodal entity linking with M3EL."""

import logging
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy
import srsly
from spacy import util
from spacy.errors import Errors
from spacy.language import Language
from spacy.pipeline import TrainablePipe
from spacy.tokens import Doc, Span
from spacy.training import Example, validate_examples
from spacy.vocab import Vocab
from thinc.api import Model

from ..images import STATUS_ATTR, copy_image, install_image_extension
from ..kb import MultimodalKB
from ..scoring import CANDIDATES_ATTR
from .entity_cache import (
    EntityCache,
    SideArrays,
    concat_sides,
    concat_stored,
    encode_side,
    retrieval_vectors,
)
from .inputs import ImageCache, entity_text, load_doc_images, load_entity_image, mention_text

logger = logging.getLogger("spacy_m3el")
CACHE_FILE = "entity_cache.safetensors"
Ranking = List[Tuple[str, float]]


def install_span_extension() -> None:
    if not Span.has_extension(CANDIDATES_ATTR):
        Span.set_extension(CANDIDATES_ATTR, default=None)


@dataclass
class DocPrediction:
    """What ``predict`` found for one doc: a ranking per entity (None = not linked)."""

    rankings: List[Optional[Ranking]] = field(default_factory=list)
    image_status: Optional[str] = None


class M3ELLinker(TrainablePipe):
    """Link entity spans to a multimodal KB using the text and the doc's image.

    vocab (Vocab): The shared vocab.
    model (Model): A model built by ``spacy_m3el.M3EL.v1``.
    name (str): The component name.
    labels_discard (Iterable[str]): NER labels that are never linked (NIL).
    overwrite (bool): Whether to overwrite KB IDs that are already set.
    use_gold_ents (bool): Copy the gold entities onto the predicted docs in
        training and scoring (for pipelines without an entity recognizer).
    threshold (Optional[float]): Minimum probability of the best candidate;
        below it the entity gets NIL. None links every entity with a candidate.
    top_k (int): How many nearest entities (by embedding similarity over the
        whole KB) to add to the KB's alias candidates.
    max_candidates (Optional[int]): At most this many candidates per mention
        are reranked with the full score: when the alias candidates and the
        top_k nearest entities are more, those with the highest embedding
        similarity are kept (the top_k nearest always among them). Bounds the
        cost of a mention when names are highly ambiguous. None keeps all.
    n_hard_negatives (int): Alias candidates of a mention that join the
        batch's negatives in training.
    get_candidates_batch (Callable): ``(kb, spans) -> candidates per span``.
    generate_empty_kb (Callable[[Vocab, int], MultimodalKB]): Creates the KB
        object that ``from_disk`` fills.
    image_attr (str): Name of the Doc extension holding the image.
    max_context_tokens (int): Context window (spaCy tokens) of a mention.
    entity_batch_size (int): Entities encoded per batch when building the entity cache.
    entity_cache_precision (str): "int8" (default), "float16" or "float32" storage of
        the cached entity features.
    save_entity_cache (bool): Save the entity cache with the pipeline (when it is
        up to date), so a loaded pipeline does not re-encode the KB.
    image_cache_size (int): Decoded images kept in memory.
    ignore_missing_gold (bool): In training, skip (and count) mentions whose
        gold ID is not in the KB instead of raising an error.
    scorer (Optional[Callable]): The scoring method.
    """

    NIL = "NIL"

    def __init__(
        self,
        vocab: Vocab,
        model: Model,
        name: str = "m3el_linker",
        *,
        labels_discard: Iterable[str] = (),
        overwrite: bool = True,
        use_gold_ents: bool = True,
        threshold: Optional[float] = None,
        top_k: int = 10,
        max_candidates: Optional[int] = 16,
        n_hard_negatives: int = 3,
        get_candidates_batch: Callable[[MultimodalKB, Iterable[Span]], Iterable[Iterable[Any]]],
        generate_empty_kb: Callable[[Vocab, int], MultimodalKB],
        image_attr: str = "image",
        max_context_tokens: int = 64,
        entity_batch_size: int = 64,
        entity_cache_precision: str = "int8",
        save_entity_cache: bool = True,
        image_cache_size: int = 512,
        ignore_missing_gold: bool = False,
        scorer: Optional[Callable] = None,
    ) -> None:
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise ValueError(Errors.E1043)
        if max_candidates is not None and max_candidates < 1:
            raise ValueError(
                f"{name}: max_candidates must be at least 1 (or null for no limit), got {max_candidates}."
            )
        minimums = {
            "top_k": (top_k, 0),
            "n_hard_negatives": (n_hard_negatives, 0),
            "max_context_tokens": (max_context_tokens, 1),
            "entity_batch_size": (entity_batch_size, 1),
        }
        for key, (value, minimum) in minimums.items():
            if value < minimum:
                raise ValueError(f"{name}: {key} must be at least {minimum}, got {value}.")
        self.vocab = vocab
        self.model = model
        self.name = name
        self.labels_discard = list(labels_discard)
        self.threshold = threshold
        self.top_k = top_k
        self.max_candidates = max_candidates
        self.n_hard_negatives = n_hard_negatives
        self.get_candidates_batch = get_candidates_batch
        self.generate_empty_kb = generate_empty_kb
        self.image_attr = image_attr
        self.max_context_tokens = max_context_tokens
        self.entity_batch_size = entity_batch_size
        if entity_cache_precision not in ("int8", "float16", "float32"):
            raise ValueError(
                f"{name}: entity_cache_precision must be int8, float16 or float32, got {entity_cache_precision!r}."
            )
        self.entity_cache_precision = entity_cache_precision
        self.save_entity_cache = save_entity_cache
        self.ignore_missing_gold = ignore_missing_gold
        self.use_gold_ents = use_gold_ents
        self.cfg: Dict[str, Any] = {"overwrite": overwrite}
        self.kb: MultimodalKB = generate_empty_kb(vocab, 1)
        self.scorer = self._wrap_scorer(scorer)
        self._images = ImageCache(image_cache_size)
        self._cache: Optional[EntityCache] = None
        self._cache_key: Optional[Tuple[int, int, int]] = None
        self._model_version = 0
        self.skipped_missing_gold = 0
        install_image_extension(image_attr)
        install_span_extension()

    # Knowledge base ---------------------------------------------------------

    def set_kb(self, kb_loader: Callable[[Vocab], MultimodalKB]) -> None:
        """Set the KB from a loader ``vocab -> KB`` (such as ``spacy_m3el.KBFromFile.v1``)."""
        if not callable(kb_loader):
            raise ValueError(Errors.E885.format(arg_type=type(kb_loader)))
        kb = kb_loader(self.vocab)
        if not isinstance(kb, MultimodalKB):
            raise TypeError(
                f"{self.name} needs a spacy_m3el MultimodalKB (entities with names, "
                f"descriptions and images), got {type(kb).__name__}. Build one with "
                "spacy_m3el.kb.MultimodalKB or load it with spacy_m3el.KBFromFile.v1."
            )
        self.kb = kb

    def validate_kb(self) -> None:
        if self.kb is None:
            raise ValueError(Errors.E1018.format(name=self.name))
        if self.kb.is_empty():
            raise ValueError(Errors.E139.format(name=self.name))

    @property
    def net(self):
        from ..ml.model import get_net

        return get_net(self.model)

    # Initialization ---------------------------------------------------------

    def initialize(
        self,
        get_examples: Callable[[], Iterable[Example]],
        *,
        nlp: Optional[Language] = None,
        kb_loader: Optional[Callable[[Vocab], MultimodalKB]] = None,
    ) -> None:
        """Load the KB and the pretrained encoder weights.

        get_examples (Callable[[], Iterable[Example]]): Training examples (a sample is checked).
        nlp (Language): The pipeline.
        kb_loader (Callable[[Vocab], MultimodalKB]): Creates the KB.
        """
        validate_get_examples = getattr(self, "_validate_get_examples", None)
        if get_examples is not None and validate_get_examples:
            validate_get_examples(get_examples, "M3ELLinker.initialize")
        if kb_loader is not None:
            self.set_kb(kb_loader)
        self.validate_kb()
        self.model.initialize()
        self._model_changed()
        if get_examples is not None:
            self._check_gold_ids(islice(get_examples(), 50))

    def _check_gold_ids(self, examples: Iterable[Example]) -> None:
        for eg in examples:
            for ent in eg.reference.ents:
                if (
                    ent.kb_id_
                    and ent.kb_id_ != self.NIL
                    and not self.kb.contains_entity(ent.kb_id_)
                    and not self.ignore_missing_gold
                ):
                    raise ValueError(self._missing_gold_message(ent, ent.kb_id_))

    def _missing_gold_message(self, ent: Span, kb_id: str) -> str:
        return (
            f"{self.name}: the gold KB ID {kb_id!r} of the entity {ent.text!r} in the "
            f"example {ent.doc.text[:60]!r} is not in the knowledge base. Add the entity "
            "to the KB, or set ignore_missing_gold = true to skip such mentions (they are "
            "counted in the component's skipped_missing_gold)."
        )

    def _model_changed(self) -> None:
        self._model_version += 1

    # Prediction -------------------------------------------------------------

    def predict(self, docs: Iterable[Doc]) -> List[DocPrediction]:
        """Rank candidate entities for every entity span of the docs.

        RETURNS (List[DocPrediction]): per doc, a ranking per entity.
        """
        docs = list(docs)
        self.validate_kb()
        predictions = [DocPrediction() for _ in docs]
        spans: List[Tuple[int, int, Span]] = []  # (doc, position in doc.ents, span)
        for i, doc in enumerate(docs):
            predictions[i].rankings = [None] * len(doc.ents)
            spans.extend(
                (i, n, ent)
                for n, ent in enumerate(doc.ents)
                if ent.label_ not in self.labels_discard
            )
        if not spans:
            return predictions
        with_mentions = sorted({i for i, _, _ in spans})
        images, statuses = self._doc_images([docs[i] for i in with_mentions])
        image_of = dict(zip(with_mentions, images))
        for i, status in zip(with_mentions, statuses):
            predictions[i].image_status = status
        rankings = self._rank([span for _, _, span in spans], [image_of[i] for i, _, _ in spans])
        for (i, n, _), ranking in zip(spans, rankings):
            predictions[i].rankings[n] = ranking
        return predictions

    def _doc_images(self, docs: List[Doc]) -> Tuple[List[object], List[Optional[str]]]:
        if not self.net.units.needs_images:
            return [None] * len(docs), [None] * len(docs)
        return load_doc_images(docs, self.image_attr, self._images, self.name)

    def _rank(self, spans: List[Span], images: List[object]) -> List[Ranking]:
        """Stage 1: alias candidates plus the top_k nearest entities. Stage 2: rerank with the full score."""
        mentions = self._encode_mentions(spans, images)
        cache = self.entity_cache
        return self._rerank(mentions, cache, self.candidate_rows(spans, mentions, cache))

    def candidate_rows(
        self, spans: List[Span], mentions: SideArrays, cache: EntityCache
    ) -> List[List[int]]:
        """Stage 1: the entity cache rows that stage 2 reranks, per span.

        spans (List[Span]): The mentions.
        mentions (SideArrays): Their encoded sides (``_encode_mentions``).
        cache (EntityCache): The entity cache of the current weights and KB.
        RETURNS (List[List[int]]): The KB's alias candidates, then the top_k
            nearest entities, at most ``max_candidates`` of them by similarity.
        """
        queries = retrieval_vectors(mentions, query=True)
        nearest = cache.nearest(queries, self.top_k)
        rows_per_span = []
        for query, aliases, near in zip(
            queries, self.get_candidates_batch(self.kb, spans), nearest
        ):
            rows = list(dict.fromkeys(cache.rows_of(c.entity_ for c in aliases) + near))
            if self.max_candidates is not None and len(rows) > self.max_candidates:
                rows = cache.most_similar(query, rows, self.max_candidates)
            rows_per_span.append(rows)
        return rows_per_span

    def _rerank(
        self, mentions: SideArrays, cache: EntityCache, rows_per_span: List[List[int]]
    ) -> List[Ranking]:
        """Stage 2: the full score of each span's candidate rows, as rankings."""
        unique_rows = sorted({row for rows in rows_per_span for row in rows})
        if not unique_rows:
            return [[] for _ in rows_per_span]
        local = {row: j for j, row in enumerate(unique_rows)}
        # One row of candidates per span, padded (with entity 0) to the longest.
        entity_index = numpy.zeros(
            (len(rows_per_span), max(len(rows) for rows in rows_per_span)), dtype="int64"
        )
        for i, rows in enumerate(rows_per_span):
            entity_index[i, : len(rows)] = [local[row] for row in rows]
        scores = self._call(
            "score",
            mentions=mentions,
            entities=cache.side_rows(unique_rows),
            entity_index=entity_index,
        )["score"]
        return [
            _to_ranking([cache.kb_ids[row] for row in rows], scores[i, : len(rows)])
            for i, rows in enumerate(rows_per_span)
        ]

    def score_all_entities(
        self, spans: List[Span], images: List[object], entity_chunk_size: int = 2048
    ) -> numpy.ndarray:
        """Full M3EL scores of each span against every KB entity (the papers' protocol).

        Entities are scored in chunks, so memory is bounded by
        ``len(spans) * entity_chunk_size`` pairs, plus the ``[len(spans), N]`` result.

        spans (List[Span]): The mentions.
        images (List[Optional[PIL.Image]]): The image of each mention's doc.
        RETURNS (numpy.ndarray[len(spans), N]): Scores, columns in ``entity_cache.kb_ids`` order.
        """
        mentions = self._encode_mentions(spans, images)
        cache = self.entity_cache
        n_spans, n_entities = len(spans), len(cache)
        scores = numpy.zeros((n_spans, n_entities), dtype="float32")
        for start in range(0, n_entities, entity_chunk_size):
            rows = list(range(start, min(start + entity_chunk_size, n_entities)))
            n_rows = len(rows)
            every = numpy.broadcast_to(numpy.arange(n_rows), (n_spans, n_rows))
            scores[:, start : start + n_rows] = self._call(
                "score", mentions=mentions, entities=cache.side_rows(rows), entity_index=every
            )["score"]
        return scores

    @property
    def entity_cache(self) -> EntityCache:
        """Every KB entity encoded with the current weights (built or checked on first use).

        A cache loaded with the pipeline is used only if its fingerprints match
        the current weights and KB; otherwise it is rebuilt, with a warning.
        """
        key = (self._model_version, id(self.kb), len(self.kb))
        if self._cache is not None and self._cache_key == key:
            return self._cache
        model_fp, kb_fp = self.model_fingerprint(), self.kb.fingerprint()
        if self._cache is not None and self._cache.matches(model_fp, kb_fp):
            self._cache_key = key
            return self._cache
        if self._cache is not None and self._cache_key is None:
            stale = "weights" if self._cache.model_fingerprint != model_fp else "knowledge base"
            logger.warning(
                "%s: the saved entity cache does not match the current %s; re-encoding the KB.",
                self.name,
                stale,
            )
        self._cache = self.build_entity_cache(model_fp, kb_fp)
        self._cache_key = key
        return self._cache

    def model_fingerprint(self) -> str:
        """A hash of the network's weights and enabled units."""
        import hashlib

        digest = hashlib.sha256(repr(self.net.units).encode("utf8"))
        for name, tensor in sorted(self.net.state_dict().items()):
            digest.update(name.encode("utf8"))
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()

    def build_entity_cache(
        self, model_fingerprint: Optional[str] = None, kb_fingerprint: Optional[str] = None
    ) -> EntityCache:
        """Encode every KB entity (first image of each) with the current weights.

        Entities are decoded, encoded and compacted a batch at a time, so memory
        holds one batch of images and float features, not the whole KB's.
        """
        records = list(self.kb.records())
        needs_images = self.net.units.needs_images
        stored, unreadable = [], 0
        for start in range(0, len(records), self.entity_batch_size):
            batch = records[start : start + self.entity_batch_size]
            images = [
                load_entity_image(self.kb, r, self._images) if needs_images else None for r in batch
            ]
            unreadable += sum(
                1 for r, image in zip(batch, images) if needs_images and r.images and image is None
            )
            side = self._encode("entity", [entity_text(r) for r in batch], images)
            stored.append(encode_side(side, self.entity_cache_precision))
        if unreadable:
            logger.warning(
                "%s: %d entity images could not be read; those entities are encoded from text only.",
                self.name,
                unreadable,
            )
        return EntityCache(
            [r.kb_id for r in records],
            concat_stored(stored),
            self.entity_cache_precision,
            model_fingerprint or self.model_fingerprint(),
            kb_fingerprint or self.kb.fingerprint(),
        )

    def load_images(self, docs: List[Doc]) -> Tuple[List[object], List[Optional[str]]]:
        """Decoded images and image statuses of docs (None images if the model ignores images)."""
        return self._doc_images(docs)

    def _call(self, task: str, **inputs) -> Dict[str, Any]:
        from ..ml.model import NetCall

        return self.model.predict(NetCall(task, inputs))

    def _encode_mentions(self, spans: List[Span], images: List[object]) -> SideArrays:
        texts = [mention_text(span, self.max_context_tokens) for span in spans]
        return self._encode("mention", texts, images)

    def _encode(self, role: str, texts: Sequence[str], images: Sequence[object]) -> SideArrays:
        parts = []
        size = self.entity_batch_size
        for start in range(0, len(texts), size):
            features = self.net.encoder.featurize(
                texts[start : start + size], images[start : start + size]
            )
            parts.append(self._call("encode", role=role, features=features))
        return concat_sides(parts)

    # Annotation -------------------------------------------------------------

    def set_annotations(self, docs: Iterable[Doc], predictions: List[DocPrediction]) -> None:
        """Write KB IDs to the entity tokens and rankings to ``span._.m3el_candidates``."""
        docs = list(docs)
        if len(docs) != len(predictions):
            raise ValueError(Errors.E148.format(ents=len(predictions), ids=len(docs)))
        overwrite = self.cfg["overwrite"]
        for doc, prediction in zip(docs, predictions):
            if prediction.image_status is not None:
                doc._.set(STATUS_ATTR, prediction.image_status)
            for ent, ranking in zip(doc.ents, prediction.rankings):
                if ranking is None:
                    kb_id = self.NIL
                else:
                    ent._.set(CANDIDATES_ATTR, ranking)
                    kb_id = self._choose(ranking)
                for token in ent:
                    if overwrite or token.ent_kb_id == 0:
                        token.ent_kb_id_ = kb_id

    def _choose(self, ranking: Ranking) -> str:
        if not ranking:
            return self.NIL
        kb_id, probability = ranking[0]
        if self.threshold is not None and probability < self.threshold:
            return self.NIL
        return kb_id

    # Training ---------------------------------------------------------------

    def update(
        self,
        examples: Iterable[Example],
        *,
        drop: float = 0.0,
        sgd: Optional[Callable] = None,
        losses: Optional[Dict[str, float]] = None,
    ) -> Dict[str, float]:
        """Learn from a batch: gold entities, other gold entities and hard negatives.

        RETURNS (Dict[str, float]): The updated losses.
        """
        if losses is None:
            losses = {}
        losses.setdefault(self.name, 0.0)
        validate_examples(examples, "M3ELLinker.update")
        self.validate_kb()
        examples = self._with_images(self._ensure_ents(list(examples)))
        batch = self._training_batch(examples)
        if batch is None:
            return losses
        from ..ml.model import NetCall, deterministic_torch

        with deterministic_torch():
            outputs, backprop = self.model.begin_update(NetCall("loss", batch))
            backprop(None)
        if sgd is not None:
            self.finish_update(sgd)
        losses[self.name] += float(outputs["loss"])
        return losses

    def finish_update(self, sgd) -> None:
        from ..ml.model import rehome_parameters

        super().finish_update(sgd)
        rehome_parameters(self.model)
        self._model_changed()

    def _training_batch(self, examples: List[Example]) -> Optional[Dict[str, Any]]:
        spans, gold_ids = self._gold_mentions(examples)
        if not spans:
            return None
        entity_ids = list(dict.fromkeys(gold_ids))
        for span, gold, candidates in zip(
            spans, gold_ids, self.get_candidates_batch(self.kb, spans)
        ):
            negatives = [
                c.entity_
                for c in sorted(candidates, key=lambda c: -c.prior_prob)
                if c.entity_ != gold
            ]
            entity_ids.extend(negatives[: self.n_hard_negatives])
        entity_ids = list(dict.fromkeys(entity_ids))
        column = {kb_id: i for i, kb_id in enumerate(entity_ids)}
        needs_images = self.net.units.needs_images
        mention_images = self._doc_images([span.doc for span in spans])[0]
        records = [self.kb.get_record(kb_id) for kb_id in entity_ids]
        entity_images = [self._random_entity_image(r) if needs_images else None for r in records]
        encoder = self.net.encoder
        return {
            "mention_features": encoder.featurize(
                [mention_text(s, self.max_context_tokens) for s in spans], mention_images
            ),
            "entity_features": encoder.featurize([entity_text(r) for r in records], entity_images),
            "labels": numpy.array([column[g] for g in gold_ids], dtype="int64"),
        }

    def _random_entity_image(self, record):
        if not record.images:
            return None
        choice = int(numpy.random.randint(len(record.images)))
        return load_entity_image(self.kb, record, self._images, choice)

    def _gold_mentions(self, examples: List[Example]) -> Tuple[List[Span], List[str]]:
        spans, gold_ids = [], []
        for eg in examples:
            kb_ids = eg.get_aligned("ENT_KB_ID", as_string=True)
            for ent in eg.predicted.ents:
                gold = kb_ids[ent.start]
                if not gold or gold == self.NIL or ent.label_ in self.labels_discard:
                    continue
                if not self.kb.contains_entity(gold):
                    if not self.ignore_missing_gold:
                        raise ValueError(self._missing_gold_message(ent, gold))
                    self.skipped_missing_gold += 1
                    continue
                spans.append(ent)
                gold_ids.append(gold)
        return spans, gold_ids

    def _ensure_ents(self, examples: List[Example]) -> List[Example]:
        """With use_gold_ents, copy the gold entities onto (copies of) the predicted docs."""
        if not self.use_gold_ents:
            return examples
        result = []
        for eg in examples:
            ents, _ = eg.get_aligned_ents_and_ner()
            new_eg = eg.copy()
            new_eg.predicted.ents = ents
            result.append(new_eg)
        return result

    def _with_images(self, examples: List[Example]) -> List[Example]:
        """Give predicted docs the reference's image if they have none (spacy.Corpus drops it)."""
        for eg in examples:
            copy_image(eg.reference, eg.predicted, self.image_attr)
        return examples

    def get_loss(self, examples: Iterable[Example], scores: Any) -> Tuple[float, Any]:
        """The loss is computed inside the network (see ``update``)."""
        raise NotImplementedError(f"{self.name} computes its loss in update().")

    def add_label(self, label: str) -> int:
        raise NotImplementedError

    def rehearse(self, examples, *, sgd=None, losses=None, **config):
        raise NotImplementedError

    # Scoring ----------------------------------------------------------------

    def _wrap_scorer(self, scorer: Optional[Callable]) -> Optional[Callable]:
        if scorer is None:
            return None

        def score_with_gold_ents(examples: Iterable[Example], **kwargs) -> Dict[str, Any]:
            examples = self._with_images(list(examples))
            if self.use_gold_ents:
                examples = self._ensure_ents(examples)
                for eg, doc in zip(examples, self.pipe(eg.predicted for eg in examples)):
                    eg.predicted = doc
            return scorer(examples, **kwargs)

        return score_with_gold_ents

    # Serialization ----------------------------------------------------------

    def to_bytes(self, *, exclude: Iterable[str] = tuple()) -> bytes:
        self._validate_serialization_attrs()
        serialize = {
            "cfg": lambda: srsly.json_dumps(self.cfg),
            "kb": self.kb.to_bytes,
            "model": self.model.to_bytes,
        }
        if "vocab" not in exclude:
            serialize["vocab"] = lambda: self.vocab.to_bytes(exclude=exclude)
        return util.to_bytes(serialize, exclude)

    def from_bytes(self, bytes_data: bytes, *, exclude: Iterable[str] = tuple()) -> "M3ELLinker":
        self._validate_serialization_attrs()
        deserialize = {
            "cfg": lambda b: self._load_cfg(lambda: srsly.json_loads(b)),
            "kb": lambda b: self._load_kb(lambda kb: kb.from_bytes(b)),
            "model": lambda b: self._load_model(lambda: self.model.from_bytes(b)),
        }
        if "vocab" not in exclude:
            deserialize["vocab"] = lambda b: self.vocab.from_bytes(b, exclude=exclude)
        util.from_bytes(bytes_data, deserialize, exclude)
        return self

    def to_disk(self, path: Union[str, Path], *, exclude: Iterable[str] = tuple()) -> None:
        serialize = {
            "cfg": lambda p: srsly.write_json(p, self.cfg),
            "kb": lambda p: self.kb.to_disk(p),
            "model": lambda p: self.model.to_disk(p),
            CACHE_FILE: self._save_cache,
        }
        if "vocab" not in exclude:
            serialize["vocab"] = lambda p: self.vocab.to_disk(p, exclude=exclude)
        util.to_disk(path, serialize, exclude)

    def _save_cache(self, path: Path) -> None:
        """Write the entity cache if it is up to date (never compute it just to save it)."""
        current = self._cache is not None and self._cache_key == (
            self._model_version,
            id(self.kb),
            len(self.kb),
        )
        if self.save_entity_cache and current:
            self._cache.to_disk(path)

    def _load_cache(self, path: Path) -> None:
        # Checked against the weights and KB on first use (see entity_cache).
        self._cache, self._cache_key = None, None
        if path.exists():
            try:
                self._cache = EntityCache.from_disk(path)
            except ValueError as err:
                logger.warning(
                    "%s: ignoring the saved entity cache, it is rebuilt when needed: %s",
                    self.name,
                    err,
                )

    def from_disk(
        self, path: Union[str, Path], *, exclude: Iterable[str] = tuple()
    ) -> "M3ELLinker":
        path = util.ensure_path(path)
        for name in ("cfg", "kb", "model"):
            if name not in exclude and not (path / name).exists():
                raise ValueError(
                    f"{self.name}: the pipeline folder {path} has no '{name}'. The pipeline "
                    "was not saved completely; save it again with nlp.to_disk()."
                )
        deserialize = {
            "cfg": lambda p: self._load_cfg(lambda: srsly.read_json(p)),
            "kb": lambda p: self._load_kb(lambda kb: kb.from_disk(p)),
            "model": lambda p: self._load_model(lambda: self.model.from_bytes(p.read_bytes())),
            CACHE_FILE: self._load_cache,
        }
        if "vocab" not in exclude:
            deserialize["vocab"] = lambda p: self.vocab.from_disk(p, exclude=exclude)
        util.from_disk(path, deserialize, exclude)
        return self

    def _load_kb(self, fill: Callable[[MultimodalKB], Any]) -> None:
        kb = self.generate_empty_kb(self.vocab, 1)
        try:
            fill(kb)
        except Exception as err:  # spaCy's KB reader fails in many ways on corrupt files
            raise ValueError(
                f"{self.name}: the knowledge base is corrupt and cannot be loaded ({type(err).__name__}: {err})."
            ) from err
        self.kb = kb

    def _load_cfg(self, read: Callable[[], Dict[str, Any]]) -> None:
        try:
            cfg = read()
        except ValueError as err:
            raise ValueError(
                f"{self.name}: the component settings file 'cfg' is corrupt ({err})."
            ) from err
        self.cfg.update(cfg)

    def _load_model(self, load: Callable[[], Any]) -> None:
        try:
            load()
        except Exception as err:
            raise ValueError(
                f"{self.name}: the model weights cannot be loaded ({type(err).__name__}: {err})."
            ) from err
        self._model_changed()


def _to_ranking(kb_ids: List[str], scores: numpy.ndarray) -> Ranking:
    """Sort candidates by score; report softmax probabilities over the candidates."""
    if not kb_ids:
        return []
    scores = scores.astype("float64")
    probabilities = numpy.exp(scores - scores.max())
    probabilities /= probabilities.sum()
    order = numpy.argsort(-scores, kind="stable")
    return [(kb_ids[i], float(probabilities[i])) for i in order]
