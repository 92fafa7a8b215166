"""The mention records of the demo and their train/dev/test split.

Most mention sentences carry no type cue, so only the mention image can tell the
entities sharing a name apart; a few nil mentions name no KB entity. In the hard
demo a share of the entities is zero-shot: their mentions are only in dev and test.
"""

from typing import Any, Dict, List, Sequence, Set, Tuple
from urllib.parse import quote

import numpy

from .demo_entities import CODAS, ONSETS
from .demo_images import COLOURS, SHAPES, Signature
from .mimic_files import SPLITS

AMBIGUOUS_FRACTION = 0.6
SPLIT_FRACTIONS = (0.70, 0.15, 0.15)
QUOTED_MENTION_FRACTION = 0.5  # of the mentions of multi-word names
NIL_FRACTION = 0.02
ZERO_SHOT_FRACTION = 0.25  # of the entities, in the hard demo

# Sentences that give no clue about the entity's type.
AMBIGUOUS_TEMPLATES = (
    "{name} was in the news again this week.",
    "Everyone was talking about {name} yesterday.",
    "I saw a picture of {name} online.",
    "{name} came up during dinner last night.",
    "There is a new article about {name}.",
    "Have you heard anything about {name} lately?",
    "My friend keeps mentioning {name}.",
    "This is {name}.",
)


def _split_sizes(m: int, rng: numpy.random.Generator) -> Tuple[int, int, int]:
    """Train/dev/test counts for one entity's m mentions; train gets at least one."""
    if m <= 1:
        return m, 0, 0
    dev, test = (int(f * m) + int(rng.random() < f * m - int(f * m)) for f in SPLIT_FRACTIONS[1:])
    while dev + test > m - 1:
        if test >= dev:
            test -= 1
        else:
            dev -= 1
    return m - dev - test, dev, test


def _zero_shot_sizes(m: int, rng: numpy.random.Generator) -> Tuple[int, int, int]:
    """Train/dev/test counts for a zero-shot entity: only the dev/test share, at least one."""
    _, dev, test = _split_sizes(m, rng)
    if dev + test == 0:
        dev, test = (1, 0) if rng.random() < 0.5 else (0, 1)
    return 0, dev, test


def _zero_shot_indices(n: int, fraction: float, rng: numpy.random.Generator) -> Set[int]:
    """The positions of the zero-shot entities among n: round(fraction * n) of them."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"zero_shot_fraction must be in [0, 1), got {fraction}.")
    if fraction == 0.0:
        return set()
    return {int(i) for i in rng.permutation(n)[: round(fraction * n)]}


def _mention_records(
    entity: Dict[str, Any], m: int, rng: numpy.random.Generator
) -> List[Dict[str, Any]]:
    n_ambiguous = round(AMBIGUOUS_FRACTION * m)
    ambiguous = rng.permutation([True] * n_ambiguous + [False] * (m - n_ambiguous))
    name = entity["name"]
    records = []
    for is_ambiguous in ambiguous:
        templates = AMBIGUOUS_TEMPLATES if is_ambiguous else entity["type"].sentences
        quoted = " " in name and rng.random() < QUOTED_MENTION_FRACTION
        records.append(
            {
                "mentions": quote(name) if quoted else name,
                "sentence": templates[int(rng.integers(len(templates)))].format(name=name),
                "answer": entity["qid"],
                "entities": name,
                "signature": entity["signature"],
            }
        )
    return records


def _nil_records(
    n: int, used_names: Sequence[str], rng: numpy.random.Generator
) -> List[Dict[str, Any]]:
    pool = [onset + coda for onset in reversed(ONSETS) for coda in reversed(CODAS)]
    used = set(used_names)
    names = [name for name in pool if name not in used][:n]
    colours = list(COLOURS)
    records = []
    for i, name in enumerate(names):
        background = colours[int(rng.integers(len(colours)))]
        foreground = next(c for c in colours[::-1] if c != background)
        records.append(
            {
                "mentions": name,
                "sentence": AMBIGUOUS_TEMPLATES[int(rng.integers(len(AMBIGUOUS_TEMPLATES)))].format(
                    name=name
                ),
                "answer": "NIL" if i % 2 else "nil",
                "entities": "nil",
                "signature": Signature(
                    background, foreground, SHAPES[int(rng.integers(len(SHAPES)))]
                ),
            }
        )
    return records


def split_mentions(
    entities: Sequence[Dict[str, Any]],
    mentions_per_entity: int,
    rng: numpy.random.Generator,
    zero_shot_fraction: float = 0.0,
) -> Dict[str, List[Dict[str, Any]]]:
    """Make the mention records, split 70/15/15 per entity so every entity is in train.

    Nil mentions (names outside the KB) are added to random splits. Zero-shot
    entities are the exception: they keep only their dev and test mentions (at
    least one).

    entities (Sequence[Dict[str, Any]]): The entities from :func:`make_entities`.
    mentions_per_entity (int): Mentions per entity, before the zero-shot entities'
        training share is dropped.
    rng (numpy.random.Generator): Source of all choices.
    zero_shot_fraction (float): Share of the entities without training mentions
        (rounded to a whole number), chosen at random.
    RETURNS (Dict[str, List[Dict[str, Any]]]): Unshuffled records per split, with
        their ``signature`` still attached.
    """
    if mentions_per_entity < 1:
        raise ValueError(f"mentions_per_entity must be at least 1, got {mentions_per_entity}.")
    zero_shot = _zero_shot_indices(len(entities), zero_shot_fraction, rng)
    splits: Dict[str, List[Dict[str, Any]]] = {split: [] for split in SPLITS}
    for i, entity in enumerate(entities):
        if i in zero_shot:
            sizes = _zero_shot_sizes(mentions_per_entity, rng)
            records = _mention_records(entity, sum(sizes), rng)
        else:
            records = _mention_records(entity, mentions_per_entity, rng)
            sizes = _split_sizes(len(records), rng)
        start = 0
        for split, size in zip(SPLITS, sizes):
            splits[split].extend(records[start : start + size])
            start += size
    total = len(entities) * mentions_per_entity
    used = sorted({entity["name"].split()[-1] for entity in entities})
    for record in _nil_records(max(1, round(NIL_FRACTION * total)), used, rng):
        split = SPLITS[int(rng.choice(len(SPLITS), p=SPLIT_FRACTIONS))]
        splits[split].append(record)
    return splits
