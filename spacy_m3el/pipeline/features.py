"""The feature store build: a frozen tower's outputs for every input training will see.

With a frozen (or partly frozen) tower, ``initialize(feature_store=...)`` computes the
frozen part's output for every training mention, every mention of the image store's
corpora (the dev set), every KB entity (and its images' jittered views when KB mentions
are jittered) and every KB mention, in batches with a progress bar, into the encoder's
memory-mapped :class:`~spacy_m3el.ml.towers.store.FeatureStore`. Items already stored
for the same tower are not computed again.
"""

import time
from itertools import chain
from pathlib import Path
from typing import Any, Iterable, Iterator, List, Optional, Tuple, Union

from spacy.tokens import Doc
from tqdm import tqdm
from wasabi import msg

from ..images import get_image
from .inputs import Corpora, corpus_docs, entity_text, mention_text
from .kb_mentions import kb_mention_span

BATCH = 64


def stores_features(model: Any) -> bool:
    """Whether the model's encoder keeps frozen features (a tower encoder with a frozen part)."""
    return bool(getattr(model.net.encoder, "stores_features", False))


def build_feature_store(
    component: Any, path: Union[str, Path], docs: Iterable[Doc], corpora: Corpora
) -> int:
    """Attach the feature store at ``path`` to the component's encoder and fill it.

    RETURNS (int): The number of items (texts and images) it holds.
    """
    began = time.perf_counter()
    encoder = component.model.net.encoder
    encoder.attach_feature_store(str(path))
    mentions = list(_mention_items(component, chain(docs, corpus_docs(component, corpora))))
    entities = list(_entity_items(component))
    jitter = component.kb_mention_jitter if component.n_kb_mentions else None
    total = len(mentions) + len(entities)
    with tqdm(total=total, desc=f"{component.name}: feature store", leave=False) as bar:
        for items, item_jitter in ((mentions, None), (entities, jitter)):
            for start in range(0, len(items), BATCH):
                part = items[start : start + BATCH]
                encoder.store_features([t for t, _ in part], [i for _, i in part], item_jitter)
                bar.update(len(part))
    encoder.flush_stores()
    items = sum(len(store) for store in encoder.stores.values())
    size = sum(store.nbytes for store in encoder.stores.values())
    msg.info(
        f"{component.name}: feature store {path}: {items} items, {size / 2**20:.1f} MiB "
        f"({size / max(items, 1):.0f} B per item), built in {time.perf_counter() - began:.1f} s"
    )
    return items


def _mention_items(component: Any, docs: Iterable[Doc]) -> Iterator[Tuple[str, Optional[object]]]:
    for doc in docs:
        if not doc.ents:
            continue
        image = None
        value = get_image(doc, component.image_attr)
        if value is not None and component.model.needs_images:
            image = component.images.load(value)[0]
        for ent in doc.ents:
            yield mention_text(ent, component.max_context_tokens), image


def _entity_items(component: Any) -> Iterator[Tuple[str, Optional[object]]]:
    """Each entity's text with each image, and (with KB mentions) its name as a mention."""
    kb, images = component.kb, component.images
    for record in kb.records():
        loaded: List[Optional[object]] = [None]
        if record.images and component.model.needs_images:
            loaded = [images.entity_image(kb, record, i) for i in range(len(record.images))]
        for image in loaded:
            yield entity_text(record), image
        if component.n_kb_mentions and record.images and record.name.split():
            span = kb_mention_span(component.vocab, record.name, None, component.image_attr)
            yield mention_text(span, component.max_context_tokens), None
