"""A small synthetic MEL dataset in the MIMIC layout, where images matter.

Several invented entities share each name (a basketball player, a river and a
ship all called "Velmora"). Most mention sentences carry no type cue, so only
the mention image can tell the entities apart. Each entity has a visual
signature (background colour + shape in a second colour) that a tiny vision
transformer trained from scratch can learn; mention images are noisy variants
of the gold entity's signature. The files follow the MIMIC layout exactly, so
``prepare_dataset("demo", ...)`` reads them like WikiMEL.

This module is the driver (:func:`generate_demo_dataset`) and reads a dataset's
texts back (:func:`make_demo_corpus_texts`); the parts live in ``demo_images``
(the drawn emblems), ``demo_entities`` (invented entities, names and
descriptions), ``demo_mentions`` (mention records and splits) and ``demo_files``
(writing the MIMIC-layout files), whose public names are re-exported here.
"""

from pathlib import Path
from typing import Any, List, Union
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
    "PNG_IMGPATH_FRACTION",
    "PREFIX",
    "QUOTED_MENTION_FRACTION",
    "REGIONS",
    "SHAPES",
    "SPLIT_FRACTIONS",
    "YEARS",
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
    seed: int = 0,
) -> Path:
    """Write the demo dataset in the MIMIC layout (deterministic for a seed).

    output_dir (Union[str, Path]): The dataset folder to write (files are overwritten).
    n_names (int): Number of distinct entity names.
    entities_per_name (int): Entities sharing each name (at most 6).
    mentions_per_entity (int): Mention records per entity, before the split.
    no_image_fraction (float): Share of KB entities without an image.
    fine_siblings (bool): Same-name entities differ only in the emblem's foreground colour.
    seed (int): Random seed.
    RETURNS (Path): ``output_dir``.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    rng = numpy.random.default_rng(seed)
    entities = make_entities(n_names, entities_per_name, rng, no_image_fraction, fine_siblings)
    splits = split_mentions(entities, mentions_per_entity, rng)
    write_kb(output_dir, entities, rng)
    write_mentions(output_dir, splits, rng)
    return output_dir


def ensure_demo_dataset(output_dir: Union[str, Path], **settings: Any) -> bool:
    """Generate the demo dataset unless ``output_dir`` holds one made with these settings.

    settings: Keyword arguments of :func:`generate_demo_dataset`, recorded in
        ``output_dir/demo_settings.json`` so that a folder made with other settings
        (say another share of image-less entities) is regenerated, never reused.
    RETURNS (bool): Whether the dataset was (re)generated.
    """
    output_dir = Path(output_dir)
    marker = output_dir / DEMO_SETTINGS_FILE
    made = srsly.read_json(marker) if marker.exists() else None
    if (output_dir / KB_FILE).exists() and made == settings:
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
