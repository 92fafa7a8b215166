"""A small synthetic MEL dataset in the MIMIC layout, where images matter.

Several invented entities share each name (a basketball player, a river and a
ship all called "Velmora"). Most mention sentences carry no type cue, so only
the mention image can tell the entities apart. Each entity has a visual
signature (background colour + shape in a second colour) that a tiny vision
transformer trained from scratch can learn; mention images are noisy variants
of the gold entity's signature. The files follow the MIMIC layout exactly, so
``prepare_dataset("demo", ...)`` reads them like WikiMEL.

The hard demo (``hard=True``) makes fine-grained matching necessary: entities
sharing a name share their type and emblem colours and differ only in shape and
pattern, mention images carry small emblems of other entities around the gold
one, and a quarter of the entities are zero-shot (mentions only in dev and test).

This module is the driver (:func:`generate_demo_dataset`) and reads a dataset's
texts back (:func:`make_demo_corpus_texts`); the parts live in ``demo_images``
(the drawn emblems), ``demo_entities`` (invented entities, names and
descriptions), ``demo_mentions`` (mention records and splits) and ``demo_files``
(writing the MIMIC-layout files), whose public names are re-exported here.
"""

import inspect
from pathlib import Path
from typing import Any, Dict, List, Union
from urllib.parse import unquote

import numpy
import srsly

from .demo_entities import (
    CODAS,
    ENTITY_TYPES,
    NAME_PREFIXES,
    NO_IMAGE_ENTITY_FRACTION,
    ONSETS,
    REGIONS,
    YEARS,
    EntityType,
    check_flag,
    invent_names,
    make_entities,
)
from .demo_files import (
    EMPTY_IMGPATH_FRACTION,
    MENTION_IMAGE_DIR,
    PNG_IMGPATH_FRACTION,
    PREFIX,
    write_kb,
    write_mentions,
)
from .demo_images import (
    COLOURS,
    IMAGE_SIZE,
    PATTERNS,
    SHAPES,
    Signature,
    describe_signature,
    draw_signature,
    entity_image,
    mention_image,
)
from .demo_mentions import (
    AMBIGUOUS_FRACTION,
    AMBIGUOUS_TEMPLATES,
    NIL_FRACTION,
    QUOTED_MENTION_FRACTION,
    SPLIT_FRACTIONS,
    ZERO_SHOT_FRACTION,
    split_mentions,
)
from .mimic_files import KB_FILE, SPLITS, detect_text_field, read_json

DEMO_SETTINGS_FILE = "demo_settings.json"

__all__ = [
    "AMBIGUOUS_FRACTION",
    "AMBIGUOUS_TEMPLATES",
    "CODAS",
    "COLOURS",
    "EMPTY_IMGPATH_FRACTION",
    "ENTITY_TYPES",
    "IMAGE_SIZE",
    "MENTION_IMAGE_DIR",
    "NAME_PREFIXES",
    "NIL_FRACTION",
    "NO_IMAGE_ENTITY_FRACTION",
    "ONSETS",
    "PATTERNS",
    "PNG_IMGPATH_FRACTION",
    "PREFIX",
    "QUOTED_MENTION_FRACTION",
    "REGIONS",
    "SHAPES",
    "SPLIT_FRACTIONS",
    "YEARS",
    "ZERO_SHOT_FRACTION",
    "EntityType",
    "Signature",
    "describe_signature",
    "draw_signature",
    "ensure_demo_dataset",
    "entity_image",
    "generate_demo_dataset",
    "invent_names",
    "make_demo_corpus_texts",
    "make_entities",
    "mention_image",
    "split_mentions",
    "write_kb",
    "write_mentions",
]


def generate_demo_dataset(
    output_dir: Union[str, Path],
    *,
    n_names: int = 40,
    entities_per_name: int = 3,
    mentions_per_entity: int = 12,
    no_image_fraction: float = NO_IMAGE_ENTITY_FRACTION,
    fine_siblings: bool = False,
    hard: bool = False,
    seed: int = 0,
) -> Path:
    """Write the demo dataset in the MIMIC layout (deterministic for a seed).

    output_dir (Union[str, Path]): The dataset folder to write (files are overwritten).
    n_names (int): Number of distinct entity names.
    entities_per_name (int): Entities sharing each name (at most 6).
    mentions_per_entity (int): Mention records per entity, before the split.
    no_image_fraction (float): Share of KB entities without an image.
    fine_siblings (bool): Same-name entities differ only in the emblem's foreground colour.
    hard (bool): The hard demo: same-name entities share type and emblem colours
        and differ only in the emblem's shape and pattern; mention images carry
        small emblems of other entities; ``ZERO_SHOT_FRACTION`` of the entities
        have mentions only in dev and test. Not with ``fine_siblings``.
    seed (int): Random seed.
    RETURNS (Path): ``output_dir``.
    """
    check_flag("hard", hard)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    rng = numpy.random.default_rng(seed)
    entities = make_entities(
        n_names, entities_per_name, rng, no_image_fraction, fine_siblings, hard
    )
    zero_shot_fraction = ZERO_SHOT_FRACTION if hard else 0.0
    splits = split_mentions(entities, mentions_per_entity, rng, zero_shot_fraction)
    write_kb(output_dir, entities, rng)
    clutter_pool = [entity["signature"] for entity in entities] if hard else []
    write_mentions(output_dir, splits, rng, clutter_pool)
    return output_dir


def _with_defaults(settings: Dict[str, Any]) -> Dict[str, Any]:
    """The settings with :func:`generate_demo_dataset`'s defaults for those not given."""
    parameters = inspect.signature(generate_demo_dataset).parameters.values()
    defaults = {p.name: p.default for p in parameters if p.kind is p.KEYWORD_ONLY}
    return {**defaults, **settings}


def ensure_demo_dataset(output_dir: Union[str, Path], **settings: Any) -> bool:
    """Generate the demo dataset unless ``output_dir`` holds one made with these settings.

    settings: Keyword arguments of :func:`generate_demo_dataset`, recorded in
        ``output_dir/demo_settings.json`` so that a folder made with other settings
        (say another share of image-less entities, or the hard demo) is
        regenerated, never reused. Settings left out count as their defaults, so
        a marker written before a setting existed still matches its default.
    RETURNS (bool): Whether the dataset was (re)generated.
    """
    output_dir = Path(output_dir)
    marker = output_dir / DEMO_SETTINGS_FILE
    made = srsly.read_json(marker) if marker.exists() else None
    if (
        (output_dir / KB_FILE).exists()
        and isinstance(made, dict)
        and _with_defaults(made) == _with_defaults(settings)
    ):
        return False
    generate_demo_dataset(output_dir, **settings)
    srsly.write_json(marker, settings)
    return True


def make_demo_corpus_texts(dataset_dir: Union[str, Path]) -> List[str]:
    """All entity names, descriptions and mention sentences of a MIMIC-layout dataset.

    Meant as the corpus for ``build_tiny_clip(path, corpus=...)`` so that BPE
    merges keep the dataset's words whole.

    dataset_dir (Union[str, Path]): A dataset folder (the demo or any MIMIC-format one).
    RETURNS (List[str]): The texts, KB first, then the splits in file-name order.
    """
    dataset_dir = Path(dataset_dir)
    entities = read_json(dataset_dir / KB_FILE)
    text_field = detect_text_field(entities)
    texts: List[str] = []
    for entity in entities:
        texts.append(unquote(str(entity.get("entity_name") or "")))
        texts.append(str(entity.get(text_field) or ""))
    for split in SPLITS:
        for path in sorted(dataset_dir.glob(f"*_{split}.json")):
            texts.extend(str(record.get("sentence") or "") for record in read_json(path))
    return [text for text in texts if text]
