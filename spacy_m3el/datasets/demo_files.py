"""Writing the demo dataset in the MIMIC layout, with the real data's quirks.

``kb_entity.json`` (URL-quoted names, ``desc``), the one-line ``qid2id.json``,
the entity and mention images, and the ``DEMO_{train,dev,test}.json`` split
files, some of whose ``imgPath`` values are empty or carry a folder and another
extension.
"""

import json
from pathlib import Path
from typing import Any, Dict, List, Sequence
from urllib.parse import quote

import numpy

from .demo_images import Signature, entity_image, mention_image
from .mimic_files import KB_FILE, KB_IMAGE_DIR, QID2ID_FILE, SPLITS

PREFIX = "DEMO"
MENTION_IMAGE_DIR = "mention_image"
EMPTY_IMGPATH_FRACTION = 0.03
PNG_IMGPATH_FRACTION = 0.05


def _save_jpeg(image, path: Path) -> None:
    image.save(path, format="JPEG", quality=90)


def _write_json(path: Path, data: Any, *, one_line: bool = False) -> None:
    text = json.dumps(data, ensure_ascii=False, indent=None if one_line else 1)
    path.write_text(text + "\n", encoding="utf8")


def write_kb(
    output_dir: Path, entities: Sequence[Dict[str, Any]], rng: numpy.random.Generator
) -> None:
    """Write ``kb_entity.json``, ``qid2id.json`` and the entity images.

    output_dir (Path): The dataset folder.
    entities (Sequence[Dict[str, Any]]): The entities from :func:`make_entities`.
    rng (numpy.random.Generator): Source of the image jitter.
    """
    image_dir = output_dir / KB_IMAGE_DIR
    image_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for i, entity in enumerate(entities):
        files = [f"{entity['qid']}_{k}.jpg" for k in range(entity["n_images"])]
        for k, file_name in enumerate(files):
            _save_jpeg(entity_image(entity["signature"], rng, k), image_dir / file_name)
        records.append(
            {
                "id": i,
                "type": entity["type"].name,
                "entity_name": quote(entity["name"]),
                "desc": entity["description"],
                "image_list": files,
            }
        )
    _write_json(output_dir / KB_FILE, records)
    _write_json(
        output_dir / QID2ID_FILE, {e["qid"]: i for i, e in enumerate(entities)}, one_line=True
    )


def write_mentions(
    output_dir: Path,
    splits: Dict[str, List[Dict[str, Any]]],
    rng: numpy.random.Generator,
    clutter_pool: Sequence[Signature] = (),
) -> None:
    """Shuffle each split, give records ids and image paths, write them and their images.

    output_dir (Path): The dataset folder.
    splits (Dict[str, List[Dict[str, Any]]]): Records from :func:`split_mentions`.
    rng (numpy.random.Generator): Source of the order, image paths and image noise.
    clutter_pool (Sequence[Signature]): Signatures to draw a few of small around
        each mention image's emblem (the hard demo); empty for clean images.
    """
    image_dir = output_dir / MENTION_IMAGE_DIR
    image_dir.mkdir(parents=True, exist_ok=True)
    n = 0
    for split in SPLITS:
        records = []
        for index in rng.permutation(len(splits[split])):
            record = dict(splits[split][index])
            signature = record.pop("signature")
            mention_id = f"{PREFIX}-{n:05d}"
            n += 1
            draw = rng.random()
            if draw < EMPTY_IMGPATH_FRACTION:
                img_path = ""
            else:
                image = mention_image(signature, rng, clutter_pool)
                _save_jpeg(image, image_dir / f"{mention_id}.jpg")
                # Some paths carry a folder and another extension, as in the real data.
                png = draw < EMPTY_IMGPATH_FRACTION + PNG_IMGPATH_FRACTION
                img_path = f"images/{mention_id}.png" if png else f"{mention_id}.jpg"
            records.append({"id": mention_id, "imgPath": img_path, **record})
        _write_json(output_dir / f"{PREFIX}_{split}.json", records)
