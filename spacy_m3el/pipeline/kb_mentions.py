"""KB entities as training mentions of themselves (``n_kb_mentions``)."""

from typing import Any, List, Tuple

import numpy
from spacy.tokens import Doc, Span
from spacy.vocab import Vocab

from ..images import set_image


def kb_mentions(component: Any, n: int) -> Tuple[List[Span], List[str]]:
    """Up to n KB entities with an image as mentions of themselves, drawn at random
    (numpy's global generator, seeded by spaCy).

    Each is a doc whose text is the entity's name, one span over it and one of the
    entity's images (``component.image_attr``). Entities with a blank name or no
    readable image are left out. Only used when the model uses images.
    """
    kb = component.kb
    records = sorted(
        (r for r in kb.records() if r.images and r.name.split()), key=lambda r: r.kb_id
    )
    spans, gold_ids = [], []
    for i in numpy.random.permutation(len(records)):
        if len(spans) == n:
            break
        record = records[i]
        ref = kb.resolve_image(record.images[random_image_choice(len(record.images))])
        if component.images.load(ref)[0] is None:
            continue
        spans.append(kb_mention_span(component.vocab, record.name, ref, component.image_attr))
        gold_ids.append(record.kb_id)
    return spans, gold_ids


def kb_mention_span(vocab: Vocab, name: str, ref: object, image_attr: str) -> Span:
    """A doc whose text is an entity's name, with one span over it and the image ``ref``
    (the stored reference, not the decoded image: the image store serves it by it)."""
    words = name.split()
    doc = Doc(vocab, words=words, spaces=[True] * (len(words) - 1) + [False])
    doc.ents = [Span(doc, 0, len(doc), label="ENTITY")]
    set_image(doc, ref, image_attr)
    return doc.ents[0]


def random_image_choice(n_images: int) -> int:
    """One of ``n_images`` at random, from numpy's global generator (seeded by spaCy)."""
    return int(numpy.random.randint(n_images))
