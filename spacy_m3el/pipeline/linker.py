"""The ``m3el_linker`` component: multimodal entity linking with M3EL.

The component keeps spaCy's contract (predict, set_annotations, update,
initialize, scoring, serialization) and delegates the work: the model
(:class:`~spacy_m3el.ml.model.M3ELModel`) encodes and scores, the entity
index (:mod:`.entity_index`) keeps the encoded KB and answers stage 1,
:mod:`.ranking` reranks (stage 2), :mod:`.training` builds training batches
and :class:`~.inputs.ImageLoader` decodes images.
"""

from collections import Counter
from itertools import islice
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import numpy
from spacy.errors import Errors
from spacy.language import Language
from spacy.pipeline import TrainablePipe
from spacy.tokens import Doc, Span
from spacy.training import Example, validate_examples, validate_get_examples
from spacy.vocab import Vocab

from ..images import install_image_extension
from ..kb import NIL, MultimodalKB
from ..ml.augment import ImageJitter
from ..ml.model import M3ELModel
from ..ml.sides import SideArrays
from ..scoring import score_linker
from .calibration import fitted_decision
from .decision import LinkDecision
from .entity_cache import EntityCache
from .entity_index import CACHE_FILE, EntityIndex, retrieve_candidates
from .gold import check_gold_sample
from .inputs import Corpora, ImageLoader, mention_inputs
from .mining import NegativeMiner
from .ranking import (
    DocPrediction,
    Ranking,
    annotate,
    install_span_extension,
    rerank,
    score_all,
)
from .serialization import LinkerSerialization
from .settings import check_kb_type, check_settings, checked_settings
from .training import (
    PreparedExamples,
    component_training_batch,
    gold_ents_scorer,
    prepare_batch,
    prepare_training,
    training_examples,
)

__all__ = ["CACHE_FILE", "DocPrediction", "M3ELLinker", "Ranking"]


class M3ELLinker(LinkerSerialization, TrainablePipe):
    """Link entity spans to a multimodal KB using the text and the doc's image.

    vocab (Vocab): The shared vocab.
    model (M3ELModel): A model built by ``spacy_m3el.M3EL.v2``.
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
    n_mined_negatives (int): Entities of the whole KB nearest to a mention
        (other than its gold) that join the batch's negatives in training.
    mining_refresh (int): Re-encode the KB for mining after this many updates.
    image_swap_negatives (bool): In training, add per gold entity a negative with its
        text and a same-name sibling's (or another batch entity's) image.
    n_kb_mentions (int): In training, add to each batch this many KB entities (with an
        image, drawn at random) as mentions of themselves: the name as the text, one of
        their images as the photo. Entities that no training mention names then get
        positives too, not only negatives.
    kb_mention_jitter, mention_jitter (Optional[Callable]): Zoom, shift and noise for the
        KB mentions' images (``spacy_m3el.ImageJitter.v1``, so the model does not learn to
        match identical pixels) and for the training mentions' own (None: as they are).
    logit_adjustment (float): In the training loss, add this times the log of 1 + an
        entity's training mentions (counted by ``initialize``) to its logits (0: off).
    alias_evidence (bool): Combine the model's score with the alias table's
        evidence as fitted by ``fit_decision`` (False: rank by the model's score).
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
    scorer (Optional[Callable]): The scoring method (None: no scores).
    """

    NIL = NIL

    def __init__(
        self,
        vocab: Vocab,
        model: M3ELModel,
        name: str = "m3el_linker",
        *,
        labels_discard: Iterable[str] = (),
        overwrite: bool = True,
        use_gold_ents: bool = True,
        threshold: Optional[float] = None,
        top_k: int = 10,
        max_candidates: Optional[int] = 16,
        n_hard_negatives: int = 3,
        n_mined_negatives: int = 3,
        image_swap_negatives: bool = False,
        n_kb_mentions: int = 0,
        kb_mention_jitter: Optional[Callable] = ImageJitter(),
        mention_jitter: Optional[Callable] = None,
        logit_adjustment: float = 0.0,
        mining_refresh: int = 100,
        alias_evidence: bool = True,
        get_candidates_batch: Callable[[MultimodalKB, Iterable[Span]], Iterable[Iterable[Any]]],
        generate_empty_kb: Callable[[Vocab, int], MultimodalKB],
        image_attr: str = "image",
        max_context_tokens: int = 64,
        entity_batch_size: int = 64,
        entity_cache_precision: str = "int8",
        save_entity_cache: bool = True,
        image_cache_size: int = 512,
        ignore_missing_gold: bool = False,
        scorer: Optional[Callable] = score_linker,
    ) -> None:
        check_settings(name, **checked_settings(locals()))
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
        self.save_entity_cache = save_entity_cache
        self.ignore_missing_gold = ignore_missing_gold
        self.use_gold_ents = use_gold_ents
        self.alias_evidence = alias_evidence
        self.cfg: Dict[str, Any] = {"overwrite": overwrite, "decision": LinkDecision().to_dict()}
        self.kb: MultimodalKB = generate_empty_kb(vocab, 1)
        self.scorer = gold_ents_scorer(self, scorer) if scorer is not None else None
        self.images = ImageLoader(image_cache_size, name)
        self.index = EntityIndex(
            model,
            self.images,
            precision=entity_cache_precision,
            batch_size=entity_batch_size,
            component=name,
        )
        self.miner = NegativeMiner(self.index, n_mined_negatives, mining_refresh)
        self.image_swap_negatives, self.n_kb_mentions = image_swap_negatives, n_kb_mentions
        self.kb_mention_jitter, self.mention_jitter = kb_mention_jitter, mention_jitter
        self.logit_adjustment, self.training_counts = float(logit_adjustment), Counter()
        self.skipped_missing_gold = 0
        self.prepared = PreparedExamples()
        install_image_extension(image_attr)
        install_span_extension()

    @property
    def net(self):
        """The PyTorch network (for inspection; use the model's methods to run it)."""
        return self.model.net

    @property
    def entity_cache_precision(self) -> str:
        """Storage precision of the entity cache ("int8", "float16" or "float32")."""
        return self.index.precision

    @property
    def decision(self) -> LinkDecision:
        """How candidates are ranked: model score and alias evidence (see ``fit_decision``)."""
        return LinkDecision.from_dict(self.cfg["decision"])

    @decision.setter
    def decision(self, decision: LinkDecision) -> None:
        self.cfg["decision"] = decision.to_dict()

    def fit_decision(self, examples: Iterable[Example], per_unit: bool = True) -> LinkDecision:
        """Fit (and keep) the combination of score and alias evidence on held-out examples.

        examples (Iterable[Example]): Dev examples with gold entity spans and KB IDs.
        per_unit (bool): A weight per matching unit instead of one for the overall score.
        RETURNS (LinkDecision): The fitted decision, saved with the pipeline.
        """
        self.decision = fitted_decision(self, examples, per_unit)
        return self.decision

    @property
    def entity_batch_size(self) -> int:
        """Entities (and mentions) encoded per batch."""
        return self.index.batch_size

    @entity_batch_size.setter
    def entity_batch_size(self, value: int) -> None:
        self.index.batch_size = value

    # Knowledge base -----------------------------------------------------------

    def set_kb(self, kb_loader: Callable[[Vocab], MultimodalKB]) -> None:
        """Set the KB from a loader ``vocab -> KB`` (such as ``spacy_m3el.KBFromFile.v1``)."""
        if not callable(kb_loader):
            raise ValueError(Errors.E885.format(arg_type=type(kb_loader)))
        self.kb = check_kb_type(kb_loader(self.vocab), self.name)

    def validate_kb(self) -> None:
        if self.kb is None:
            raise ValueError(Errors.E1018.format(name=self.name))
        if self.kb.is_empty():
            raise ValueError(Errors.E139.format(name=self.name))

    # Initialization -----------------------------------------------------------

    def initialize(
        self,
        get_examples: Callable[[], Iterable[Example]],
        *,
        nlp: Optional[Language] = None,
        kb_loader: Optional[Callable[[Vocab], MultimodalKB]] = None,
        image_store: Optional[str] = None,
        image_store_corpora: Corpora = None,
        feature_store: Optional[str] = None,
    ) -> None:
        """Load the KB and the pretrained encoder weights; build the image store.

        get_examples (Callable[[], Iterable[Example]]): Training examples (a sample is checked).
        nlp (Language): The pipeline; kb_loader (Callable[[Vocab], MultimodalKB]): the KB.
        image_store (Optional[str]): Folder of the image store (``build_image_store``).
        image_store_corpora (Union[str, List[str], None]): ``.spacy`` files or folders
            (such as the dev corpus) whose images the store holds too.
        feature_store (Optional[str]): Folder of the frozen towers' outputs
            (``features.build_feature_store``: the same docs, corpora and KB).
        """
        if get_examples is not None:
            validate_get_examples(get_examples, "M3ELLinker.initialize")
        if kb_loader is not None:
            self.set_kb(kb_loader)
        self.validate_kb()
        self.model.attach_pipeline(nlp)
        self.model.initialize()
        self.index.model_changed()
        if get_examples is not None and not self.ignore_missing_gold:
            check_gold_sample(self.kb, islice(get_examples(), 50), self.name)
        docs = [eg.reference for eg in get_examples()] if get_examples is not None else []
        prepare_training(self, docs, image_store, image_store_corpora, feature_store)

    # Prediction ---------------------------------------------------------------

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
        images, statuses = self.load_images([docs[i] for i in with_mentions])
        image_of = dict(zip(with_mentions, images))
        for i, status in zip(with_mentions, statuses):
            predictions[i].image_status = status
        rankings = self.link([span for _, _, span in spans], [image_of[i] for i, _, _ in spans])
        for (i, n, _), ranking in zip(spans, rankings):
            predictions[i].rankings[n] = ranking
        return predictions

    def load_images(self, docs: List[Doc]) -> Tuple[List[object], List[Optional[str]]]:
        """Decoded images and image statuses of docs (all None if the model ignores images)."""
        if not self.model.needs_images:
            return [None] * len(docs), [None] * len(docs)
        return self.images.doc_images(docs, self.image_attr)

    def link(self, spans: List[Span], images: List[object]) -> List[Ranking]:
        """Rank candidates for spans: encode, stage 1 (retrieve), stage 2 (rerank).

        spans (List[Span]): The mentions.
        images (List[Optional[PIL.Image.Image]]): The image of each mention's doc.
        RETURNS (List[Ranking]): Per span, ``(kb_id, probability)`` best first.
        """
        mentions = self.encode_mentions(spans, images)
        return self.rerank(mentions, self.retrieve(spans, mentions))

    def encode_mentions(self, spans: List[Span], images: List[object]) -> SideArrays:
        """The mentions' side features: ``"<mention> [SEP] <context>"`` and the doc's image."""
        texts, windows = mention_inputs(self.model, spans, self.max_context_tokens)
        return self.model.encode("mention", texts, images, self.entity_batch_size, windows)

    def retrieve(
        self, spans: List[Span], mentions: SideArrays, cache: Optional[EntityCache] = None
    ) -> List[List[int]]:
        """Stage 1: the entity cache rows that stage 2 reranks, per span.

        mentions (SideArrays): The spans' side features (:meth:`encode_mentions`).
        cache (Optional[EntityCache]): Search this cache instead of the
            component's own (for caches built elsewhere, or benchmarks).
        RETURNS (List[List[int]]): The KB's alias candidates, then the top_k
            nearest entities, at most ``max_candidates`` of them by similarity.
        """
        return retrieve_candidates(
            self.entity_cache if cache is None else cache,
            self.model.retrieval_vectors(mentions, query=True),
            self.get_candidates_batch(self.kb, spans),
            top_k=self.top_k,
            max_candidates=self.max_candidates,
            mention_texts=[span.text for span in spans],
        )

    def rerank(
        self,
        mentions: SideArrays,
        rows_per_span: List[List[int]],
        cache: Optional[EntityCache] = None,
    ) -> List[Ranking]:
        """Stage 2: the full M3EL score of each span's candidate rows, as rankings.

        With ``alias_evidence``, the fitted decision (:attr:`decision`) combines the
        score with the alias evidence of stage 1's candidate sets.

        cache (Optional[EntityCache]): The cache the rows index (default: the component's).
        """
        cache = self.entity_cache if cache is None else cache
        decision = self.decision if self.alias_evidence else None
        return rerank(self.model, mentions, cache, rows_per_span, decision)

    def score_all_entities(
        self,
        spans: List[Span],
        images: List[object],
        entity_chunk_size: int = 2048,
        cache: Optional[EntityCache] = None,
    ) -> numpy.ndarray:
        """Full M3EL scores of each span against every KB entity (the papers' protocol),
        in chunks of ``entity_chunk_size`` entities.

        images (List[Optional[PIL.Image]]): The image of each mention's doc (span).
        cache (Optional[EntityCache]): The entities' features (default: the component's
            cache; evaluation passes ``exact_entity_cache()``).
        RETURNS (numpy.ndarray[len(spans), N]): Scores, columns in ``cache.kb_ids`` order.
        """
        cache = self.entity_cache if cache is None else cache
        return score_all(self.model, self.encode_mentions(spans, images), cache, entity_chunk_size)

    @property
    def entity_cache(self) -> EntityCache:
        """Every KB entity encoded with the current weights (built or checked on first use).

        A cache loaded with the pipeline is used only if its fingerprints match
        the current weights and KB; otherwise it is rebuilt, with a warning.
        """
        return self.index.cache(self.kb)

    def exact_entity_cache(self) -> EntityCache:
        """The KB encoded in float32, as evaluation scores it (``EntityIndex.exact``: kept
        until ``index.forget_exact()``; a stale linking cache is converted from it)."""
        return self.index.exact(self.kb)

    def build_entity_cache(self) -> EntityCache:
        """Encode every KB entity with the current weights (always; see ``entity_cache``)."""
        return self.index.build(self.kb)

    # Annotation ---------------------------------------------------------------

    def set_annotations(self, docs: Iterable[Doc], predictions: List[DocPrediction]) -> None:
        """Write KB IDs to the entity tokens and rankings to ``span._.m3el_candidates``."""
        docs = list(docs)
        if len(docs) != len(predictions):
            raise ValueError(Errors.E148.format(ents=len(predictions), ids=len(docs)))
        for doc, prediction in zip(docs, predictions):
            annotate(doc, prediction, self.threshold, self.cfg["overwrite"])

    # Training -----------------------------------------------------------------

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
        losses = {} if losses is None else losses
        losses.setdefault(self.name, 0.0)
        validate_examples(examples, "M3ELLinker.update")
        self.validate_kb()
        batch = component_training_batch(self, training_examples(self, list(examples)))
        if batch is None:
            return losses
        outputs, backprop = self.model.begin_update(batch)
        backprop(None)
        if sgd is not None:
            self.finish_update(sgd)
        losses[self.name] += float(outputs["loss"])
        return losses

    def prepare_batch(self, examples: Iterable[Example]) -> None:
        """Prepare a future batch on the prefetch worker (``spacy_m3el.PrefetchBatcher.v1``)."""
        prepare_batch(self, examples)

    def finish_update(self, sgd) -> None:
        super().finish_update(sgd)
        self.index.model_changed()
        self.miner.model_updated()

    def get_loss(self, examples: Iterable[Example], scores: Any) -> Tuple[float, Any]:
        """The loss is computed inside the network (see ``update``)."""
        raise NotImplementedError(f"{self.name} computes its loss in update().")

    def add_label(self, label: str) -> int:
        raise NotImplementedError

    def rehearse(self, examples, *, sgd=None, losses=None, **config):
        raise NotImplementedError
