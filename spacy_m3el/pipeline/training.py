"""Training batches for the linker: gold mentions, negatives, and the model's inputs."""

import inspect
import threading
from collections import Counter
from functools import partial
from itertools import chain
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import numpy
from spacy.attrs import IDX, ORTH, SENT_START, SPACY
from spacy.tokens import Doc, Span
from spacy.training import Example

from ..images import copy_image
from ..kb import MultimodalKB
from ..ml.augment import JitterGroups
from ..ml.losses import frequency_bias
from ..ml.model import Features, M3ELModel, TrainingBatch
from . import prefetch
from .features import build_feature_store, stores_features
from .gold import GOLD_NOT_IN_KB, GOLD_OK, gold_status, missing_gold_message
from .inputs import (
    Corpora,
    ImageLoader,
    build_image_store,
    entity_text,
    mention_inputs,
    mention_text,
)
from .kb_mentions import kb_mentions, random_image_choice

TOKEN_ATTRS = [ORTH, IDX, SPACY]


def same_tokens(a: Doc, b: Doc) -> bool:
    """Whether two docs have the same tokens and whitespace (identity alignment)."""
    if len(a) != len(b):
        return False
    return numpy.array_equal(a.to_array(TOKEN_ATTRS), b.to_array(TOKEN_ATTRS))


def with_gold_ents(examples: List[Example]) -> List[Example]:
    """Examples whose predicted docs (copies) carry the gold entities.

    When both docs are tokenized alike (the usual case), the reference's entity spans are
    copied straight, and the reference doc is shared, not copied.
    """
    result = []
    for eg in examples:
        if same_tokens(eg.predicted, eg.reference):
            doc = eg.predicted.copy()
            doc.ents = [
                Span(doc, e.start, e.end, label=e.label, kb_id=e.kb_id) for e in eg.reference.ents
            ]
            result.append(Example(doc, eg.reference))
            continue
        ents, _ = eg.get_aligned_ents_and_ner()
        new_eg = eg.copy()
        new_eg.predicted.ents = ents
        result.append(new_eg)
    return result


def with_images(examples: List[Example], attr: str) -> List[Example]:
    """Give predicted docs the reference's image if they have none (spacy.Corpus drops it)."""
    for eg in examples:
        copy_image(eg.reference, eg.predicted, attr)
    return examples


def prepare_examples(component: Any, examples: List[Example]) -> List[Example]:
    """With ``use_gold_ents``, the gold entities on (copies of) the predicted docs; images too."""
    if component.use_gold_ents:
        examples = with_gold_ents(examples)
    return with_images(examples, component.image_attr)


def training_examples(component: Any, examples: List[Example]) -> List[Example]:
    """:func:`prepare_examples`, taking what the prefetch worker prepared when it is valid."""
    ready = component.prepared.take(examples)
    missing = prepare_examples(component, [eg for eg, p in zip(examples, ready) if p is None])
    computed = iter(missing)
    return [p if p is not None else next(computed) for p in ready]


class PreparedExamples:
    """Examples prepared by the prefetch worker (``M3ELLinker.prepare_batch``), until the
    training step that needs them takes them.

    A prepared example is used only for the same reference doc and a predicted doc with
    the same tokens and sentence boundaries (an annotating component may have set them
    since); otherwise the step prepares it again.
    """

    def __init__(self) -> None:
        self._items: Dict[int, Tuple[Doc, Example]] = {}
        self._lock = threading.Lock()
        self.used = 0  # prepared examples that training steps took

    def __len__(self) -> int:
        return len(self._items)

    def put(self, originals: List[Example], prepared: List[Example]) -> None:
        with self._lock:
            for eg, ready in zip(originals, prepared):
                self._items[id(eg.reference)] = (eg.reference, ready)

    def take(self, examples: List[Example]) -> List[Optional[Example]]:
        with self._lock:
            entries = [self._items.pop(id(eg.reference), None) for eg in examples]
        result: List[Optional[Example]] = []
        for eg, entry in zip(examples, entries):
            valid = entry is not None and _still_valid(eg, *entry)
            result.append(entry[1] if valid else None)
        self.used += sum(r is not None for r in result)
        return result

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


def _still_valid(eg: Example, reference: Doc, ready: Example) -> bool:
    if reference is not eg.reference or not same_tokens(ready.predicted, eg.predicted):
        return False
    a, b = ready.predicted, eg.predicted
    if a.has_annotation("SENT_START") != b.has_annotation("SENT_START"):
        return False
    return numpy.array_equal(a.to_array([SENT_START]), b.to_array([SENT_START]))


def gold_ents_scorer(component: Any, scorer: Callable[..., Dict[str, Any]]) -> Callable:
    """Wrap a scorer so it sees the component's images and, with use_gold_ents, gold spans.

    With ``use_gold_ents`` the examples' predicted docs get the gold entities
    and are linked again by ``component.pipe`` before scoring, as in training.
    A scorer with a ``component`` keyword (the full-KB scorer) also gets the component,
    and the KB is encoded once for both the linking and the scorer's float32 ranking.
    """
    wants_component = "component" in inspect.signature(scorer).parameters

    def score(examples: Iterable[Example], **kwargs) -> Dict[str, Any]:
        if wants_component:
            kwargs["component"] = component
            # The KB is encoded once: linking's cache is converted from the float32 one.
            component.exact_entity_cache()
        try:
            examples = with_images(list(examples), component.image_attr)
            if component.use_gold_ents:
                examples = with_gold_ents(examples)
                for eg, doc in zip(examples, component.pipe(eg.predicted for eg in examples)):
                    eg.predicted = doc
            return scorer(examples, **kwargs)
        finally:
            component.index.forget_exact()

    return score


class GoldMentions:
    """Collects the predicted entity spans that a batch can learn from, with their gold IDs.

    kb (MultimodalKB): The knowledge base.
    labels_discard (Iterable[str]): NER labels that are never linked.
    ignore_missing_gold (bool): Skip (and count) gold IDs that are not in the
        KB instead of raising an error.
    component (str): The component name, for messages.
    """

    def __init__(
        self,
        kb: MultimodalKB,
        labels_discard: Iterable[str],
        ignore_missing_gold: bool,
        component: str,
    ):
        self.kb = kb
        self.labels_discard = tuple(labels_discard)
        self.ignore_missing_gold = ignore_missing_gold
        self.component = component
        self.skipped = 0

    def __call__(self, examples: Iterable[Example]) -> Tuple[List[Span], List[str]]:
        """RETURNS (Tuple[List[Span], List[str]]): the spans and their gold KB IDs."""
        spans, gold_ids = [], []
        for eg in examples:
            if same_tokens(eg.predicted, eg.reference):
                kb_ids = None
            else:
                kb_ids = eg.get_aligned("ENT_KB_ID", as_string=True)
            for ent in eg.predicted.ents:
                gold = eg.reference[ent.start].ent_kb_id_ if kb_ids is None else kb_ids[ent.start]
                status = gold_status(self.kb, gold, ent.label_, self.labels_discard)
                if status == GOLD_NOT_IN_KB:
                    if not self.ignore_missing_gold:
                        raise ValueError(missing_gold_message(self.component, ent, gold))
                    self.skipped += 1
                if status == GOLD_OK:
                    spans.append(ent)
                    gold_ids.append(gold)
        return spans, gold_ids


def training_batch(
    model: M3ELModel,
    kb: MultimodalKB,
    spans: List[Span],
    gold_ids: List[str],
    *,
    alias_candidates: Iterable[Iterable[Any]],
    mention_images: List[Optional[object]],
    images: ImageLoader,
    n_hard_negatives: int,
    max_context_tokens: int,
    choose_image: Callable[[int], int],
    mine: Optional[Callable[[Features], List[List[str]]]] = None,
    image_swaps: bool = False,
    batch_docs: Optional[List[Doc]] = None,
    mention_jitter: Optional[JitterGroups] = None,
    entity_bias: Optional[Callable[[str], float]] = None,
) -> TrainingBatch:
    """The model's inputs for a batch of gold mentions.

    Each mention is scored against every entity of the batch: the gold
    entities of all mentions (deduplicated) plus, per mention, its
    ``n_hard_negatives`` alias candidates with the highest prior and the
    negatives that ``mine`` finds in the whole KB.

    alias_candidates (Iterable[Iterable[Candidate]]): The KB's candidates per span.
    mention_images (List[Optional[PIL.Image.Image]]): The image of each span's doc.
    images (ImageLoader): Loads the entities' images.
    choose_image (Callable[[int], int]): Picks which of an entity's n images to use.
    mine (Optional[Callable[[Features], List[List[str]]]]): The mined negatives' KB IDs
        per mention, from the featurized mentions.
    image_swaps (bool): Add, per gold entity with an image, a negative with the gold's
        name and description but another batch entity's image (its nearest alias
        sibling's when it has one): the scores of the two differ only in the
        image-dependent units, which must tell them apart.
    batch_docs (Optional[List[Doc]]): Every doc of the step, in order (a text tower's
        listener checks that it received the transformer's output for these).
    mention_jitter (Optional[JitterGroups]): (mention items, jitter) groups whose images
        are jittered when featurized (the KB mentions', and with ``mention_jitter`` the
        training mentions').
    entity_bias (Optional[Callable[[str], float]]): A KB ID's logit adjustment in the loss.
    RETURNS (TrainingBatch): Featurized mentions and entities and the gold columns.
    """
    alias_candidates = [list(candidates) for candidates in alias_candidates]
    texts, windows = mention_inputs(model, spans, max_context_tokens)
    mention_features, mention_backprop = model.featurize_for_update(
        texts, mention_images, windows, batch_docs, jitter=mention_jitter
    )
    mined = mine(mention_features) if mine is not None else [[] for _ in spans]
    entity_ids = list(dict.fromkeys(gold_ids))
    for gold, candidates, hard in zip(gold_ids, alias_candidates, mined):
        ranked = sorted(candidates, key=lambda c: -c.prior_prob)
        negatives = [c.entity_ for c in ranked if c.entity_ != gold]
        entity_ids.extend(negatives[:n_hard_negatives])
        entity_ids.extend(hard)
    entity_ids = list(dict.fromkeys(entity_ids))
    column = {kb_id: i for i, kb_id in enumerate(entity_ids)}
    records = [kb.get_record(kb_id) for kb_id in entity_ids]
    entity_images = [
        images.entity_image(kb, r, choose_image(len(r.images)))
        if model.needs_images and r.images
        else None
        for r in records
    ]
    texts = [entity_text(r) for r in records]
    row_ids = list(entity_ids)
    if image_swaps and model.needs_images:
        swapped = swap_images(gold_ids, entity_images, column, alias_candidates)
        texts += [texts[i] for i, _ in swapped]
        entity_images += [image for _, image in swapped]
        row_ids += [entity_ids[i] for i, _ in swapped]
    entity_features, entity_backprop = model.featurize_for_update(texts, entity_images)
    backprops = {"mention": mention_backprop, "entity": entity_backprop}
    return TrainingBatch(
        mention_features=mention_features,
        entity_features=entity_features,
        labels=numpy.array([column[g] for g in gold_ids], dtype="int64"),
        text_backprops={role: bp for role, bp in backprops.items() if bp is not None},
        column_bias=(
            None if entity_bias is None else numpy.array([entity_bias(k) for k in row_ids], "f4")
        ),
    )


def swap_images(
    gold_ids: List[str],
    entity_images: List[Optional[object]],
    column: Dict[str, int],
    alias_candidates: Iterable[Iterable[Any]],
) -> List[Tuple[int, object]]:
    """Per gold entity with an image: (its column, an image of another batch entity).

    The other image is that of the gold's first alias sibling in the batch with an
    image (a same-name entity), else of the next batch entity with an image.
    """
    with_image = [i for i, image in enumerate(entity_images) if image is not None]
    swapped: Dict[int, object] = {}
    for gold, candidates in zip(gold_ids, alias_candidates):
        own = column[gold]
        if own in swapped or entity_images[own] is None or len(with_image) < 2:
            continue
        siblings = [column.get(c.entity_) for c in candidates if c.entity_ != gold]
        options = [i for i in siblings if i is not None and entity_images[i] is not None]
        if not options:
            later = [i for i in with_image if i > own] + [i for i in with_image if i < own]
            options = later[:1]
        swapped[own] = entity_images[options[0]]
    return list(swapped.items())


def component_training_batch(component: Any, examples: List[Example]) -> Optional[TrainingBatch]:
    """The training batch of an ``m3el_linker`` for prepared examples (None if nothing to learn;
    a text tower's listener then gets its batch back with a zero gradient).

    component (M3ELLinker): Gives the KB, model, images, settings and negative miner;
        mentions skipped for a gold ID missing from the KB are added to its
        ``skipped_missing_gold``.
    """
    gold = GoldMentions(
        component.kb, component.labels_discard, component.ignore_missing_gold, component.name
    )
    spans, gold_ids = gold(examples)
    component.skipped_missing_gold += gold.skipped
    if not spans:
        if component.model.text_tower is not None:
            component.model.text_tower.skip_batch([eg.predicted for eg in examples])
        return None
    model, miner = component.model, component.miner
    jitters = []  # (batch items, jitter): the mentions whose images are jittered
    if model.needs_images and component.mention_jitter is not None:
        jitters.append((range(len(spans)), component.mention_jitter))
    if component.n_kb_mentions and model.needs_images:
        kb_spans, kb_ids = kb_mentions(component, component.n_kb_mentions)
        if component.kb_mention_jitter is not None:
            kb_items = range(len(spans), len(spans) + len(kb_spans))
            jitters.append((kb_items, component.kb_mention_jitter))
        spans, gold_ids = spans + kb_spans, gold_ids + kb_ids

    def mine(mention_features: Features) -> List[List[str]]:
        mentions = model.encode_features("mention", mention_features)
        queries = partial(model.retrieval_vectors, query=True)
        return miner.mine(component.kb, mentions, gold_ids, queries)

    return training_batch(
        model,
        component.kb,
        spans,
        gold_ids,
        alias_candidates=component.get_candidates_batch(component.kb, spans),
        mention_images=component.load_images([span.doc for span in spans])[0],
        images=component.images,
        n_hard_negatives=component.n_hard_negatives,
        max_context_tokens=component.max_context_tokens,
        choose_image=random_image_choice,
        mine=mine if miner.enabled else None,
        image_swaps=component.image_swap_negatives,
        batch_docs=[eg.predicted for eg in examples],
        mention_jitter=jitters or None,
        entity_bias=(
            partial(frequency_bias, component.training_counts, component.logit_adjustment)
            if component.logit_adjustment
            else None
        ),
    )


def warm_token_cache(component: Any, docs: Iterable[Doc], chunk: int = 1024) -> None:
    """Tokenize, once and in large batches, the texts training will featurize again and
    again: the gold mentions' texts of the docs and every KB entity's text (up to the
    encoder's token cache size). Training then finds them in the cache; results do not
    change (the cache holds exactly what the tokenizer gives)."""
    model = component.model
    if model.text_tower is not None:
        return  # the shared transformer tokenizes (spacy-transformers)
    mentions = (mention_text(ent, component.max_context_tokens) for doc in docs for ent in doc.ents)
    entities = (entity_text(record) for record in component.kb.records())
    texts = list(dict.fromkeys(chain(mentions, entities)))[: model.token_cache_size]
    for start in range(0, len(texts), chunk):
        model.tokenize(texts[start : start + chunk])


def prepare_batch(component: Any, examples: Iterable[Example]) -> None:
    """On the prefetch worker: prepare a future batch's examples (:func:`prepare_examples`)
    and load their images into the component's image loader, for the step to take.
    Batches of other pipelines (another vocab) and of other items are left alone."""
    examples = [
        eg for eg in examples if isinstance(eg, Example) and eg.reference.vocab is component.vocab
    ]
    if not examples:
        return
    ready = prepare_examples(component, examples)
    if component.model.needs_images:
        component.images.warm([eg.predicted for eg in ready], component.image_attr)
    component.prepared.put(examples, ready)


def prepare_training(
    component: Any,
    docs: List[Doc],
    image_store: Optional[str],
    corpora: Corpora,
    feature_store: Optional[str] = None,
) -> None:
    """What ``initialize`` prepares for training: the training mention counts, prefetch,
    the token cache (:func:`warm_token_cache`) and, given folders, the image store
    (:func:`~.inputs.build_image_store`) and, for frozen towers, the feature store
    (:func:`~.features.build_feature_store`) of the training docs, ``corpora`` and the KB."""
    component.prepared.clear()
    component.training_counts = Counter(ent.kb_id_ for doc in docs for ent in doc.ents)
    prefetch.register(component)
    warm_token_cache(component, docs)
    if image_store is not None and component.model.needs_images:
        build_image_store(component, image_store, docs, corpora)
    if stores_features(component.model) and (feature_store or image_store) is not None:
        # Beside the image store unless named: "<image store>.features".
        folder = feature_store if feature_store is not None else f"{image_store}.features"
        build_feature_store(component, folder, docs, corpora)
