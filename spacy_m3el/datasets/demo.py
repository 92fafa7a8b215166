"""A small synthetic MEL dataset in the MIMIC layout, where images matter.

Several invented entities share each name (a basketball player, a river and a
ship all called "Velmora"). Most mention sentences carry no type cue, so only
the mention image can tell the entities apart. Each entity has a visual
signature (background colour + shape in a second colour) that a tiny vision
transformer trained from scratch can learn; mention images are noisy variants
of the gold entity's signature. The files follow the MIMIC layout exactly, so
``prepare_dataset("demo", ...)`` reads them like WikiMEL.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple, Union
from urllib.parse import quote, unquote

import numpy

from .mimic import KB_FILE, KB_IMAGE_DIR, QID2ID_FILE, SPLITS, detect_text_field, read_json

PREFIX = "DEMO"
MENTION_IMAGE_DIR = "mention_image"
IMAGE_SIZE = 64
AMBIGUOUS_FRACTION = 0.6
SPLIT_FRACTIONS = (0.70, 0.15, 0.15)
NO_IMAGE_ENTITY_FRACTION = 0.05
EMPTY_IMGPATH_FRACTION = 0.03
PNG_IMGPATH_FRACTION = 0.05
QUOTED_MENTION_FRACTION = 0.5  # of the mentions of multi-word names
NIL_FRACTION = 0.02

ONSETS = (
    "Vel",
    "Kas",
    "Mor",
    "Tal",
    "Zen",
    "Bra",
    "Quor",
    "Lin",
    "Dra",
    "Fen",
    "Gal",
    "Hes",
    "Iro",
    "Jun",
    "Nal",
    "Ost",
    "Pry",
    "Rue",
    "Sol",
    "Tir",
    "Ulm",
    "Vor",
    "Wes",
    "Yar",
)
CODAS = (
    "mora",
    "trel",
    "vane",
    "dith",
    "kora",
    "lune",
    "mir",
    "nost",
    "pell",
    "rask",
    "sten",
    "thal",
    "varn",
    "wick",
    "zara",
    "bel",
)
NAME_PREFIXES = ("Nova", "Old", "Upper", "Saint", "Port")
REGIONS = (
    "the Orvane valley",
    "northern Castria",
    "the Pellish coast",
    "eastern Dunmark",
    "the Saltmere plains",
    "southern Ilvar",
)
YEARS = tuple(range(1890, 2016, 7))

COLOURS: Dict[str, Tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "green": (40, 165, 60),
    "blue": (40, 75, 215),
    "yellow": (235, 210, 40),
    "purple": (135, 45, 170),
    "orange": (240, 130, 30),
    "cyan": (40, 200, 210),
    "white": (240, 240, 240),
    "black": (25, 25, 25),
}
SHAPES = ("circle", "square", "triangle", "stripes", "cross", "diamond")

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


@dataclass(frozen=True)
class EntityType:
    """A kind of entity, with the word that cues it and text templates.

    name (str): The type, stored in ``kb_entity.json``.
    cue (str): The word that tells this type apart; in every description and
        informative sentence, and in no ambiguous one.
    description (str): Template with ``{name}``, ``{region}``, ``{year}``, ``{number}``.
    sentences (Tuple[str, ...]): Informative mention sentence templates.
    """

    name: str
    cue: str
    description: str
    sentences: Tuple[str, ...]


ENTITY_TYPES = (
    EntityType(
        "person",
        "basketball",
        "{name} is a basketball player born in {year} who scored {number} points last season.",
        (
            "{name} scored thirty points in the basketball game last night.",
            "The basketball coach praised {name} after the match.",
        ),
    ),
    EntityType(
        "river",
        "river",
        "{name} is a river in {region}, about {number} km long.",
        (
            "We sailed down the {name} river last summer.",
            "The {name} river flooded the fields after the storm.",
        ),
    ),
    EntityType(
        "city",
        "city",
        "{name} is a city in {region} with {number} thousand inhabitants.",
        (
            "The mayor of the city of {name} opened a new station.",
            "Tourists crowd the old city of {name} every spring.",
        ),
    ),
    EntityType(
        "band",
        "band",
        "{name} is a rock band formed in {year} that has released {number} albums.",
        (
            "The band {name} released a new album.",
            "{name} played their hits to a sold-out crowd, the band said.",
        ),
    ),
    EntityType(
        "ship",
        "ship",
        "{name} is a cargo ship launched in {year} and registered in {region}.",
        (
            "The ship {name} docked in the harbour at dawn.",
            "The crew of the ship {name} was rescued at sea.",
        ),
    ),
    EntityType(
        "mountain",
        "mountain",
        "{name} is a mountain in {region}, {number}0 metres high.",
        (
            "Climbers reached the summit of the mountain {name}.",
            "Snow covered the mountain {name} early this year.",
        ),
    ),
    EntityType(
        "painter",
        "painter",
        "{name} is a painter born in {year}, known for {number} landscapes.",
        (
            "A landscape by the painter {name} was sold at auction.",
            "The museum opened a show of the painter {name}.",
        ),
    ),
    EntityType(
        "company",
        "company",
        "{name} is a company founded in {year} in {region} with {number} employees.",
        (
            "Shares of the company {name} rose sharply.",
            "The company {name} hired a new chief executive.",
        ),
    ),
)


@dataclass(frozen=True)
class Signature:
    """The visual identity of an entity: a shape in one colour on another."""

    background: str
    foreground: str
    shape: str


def describe_signature(signature: Signature) -> str:
    """Words for a signature, e.g. "an orange circle on blue" or "red stripes on white"."""
    if signature.shape == "stripes":
        shape = f"{signature.foreground} stripes"
    else:
        article = "an" if signature.foreground[0] in "aeiou" else "a"
        shape = f"{article} {signature.foreground} {signature.shape}"
    return f"{shape} on {signature.background}"


# Images ---------------------------------------------------------------------


def _jitter_colour(
    colour: Tuple[int, int, int], rng: numpy.random.Generator, amount: int
) -> Tuple[int, ...]:
    if amount == 0:
        return colour
    return tuple(int(numpy.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in colour)


def _shape_polygon(shape: str, cx: float, cy: float, r: float) -> List[Tuple[float, float]]:
    if shape == "triangle":
        return [(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape == "diamond":
        return [(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)]
    raise ValueError(f"not a polygon shape: {shape}")


def draw_signature(
    signature: Signature,
    rng: numpy.random.Generator,
    *,
    size: int = IMAGE_SIZE,
    colour_jitter: int = 0,
    position_jitter: float = 0.0,
    scale_range: Tuple[float, float] = (1.0, 1.0),
    noise: float = 0.0,
):
    """Draw a signature, optionally with jittered colours, position, size and pixel noise.

    signature (Signature): What to draw.
    rng (numpy.random.Generator): Source of the jitter.
    size (int): Side of the square image in pixels.
    colour_jitter (int): Maximum change per colour channel.
    position_jitter (float): Maximum shift of the shape, as a fraction of ``size``.
    scale_range (Tuple[float, float]): Range of the shape's size factor.
    noise (float): Standard deviation of the Gaussian pixel noise.
    RETURNS (PIL.Image.Image): The RGB image.
    """
    from PIL import Image, ImageDraw

    background = _jitter_colour(COLOURS[signature.background], rng, colour_jitter)
    foreground = _jitter_colour(COLOURS[signature.foreground], rng, colour_jitter)
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    shift = (
        rng.uniform(-position_jitter, position_jitter, size=2) * size
        if position_jitter
        else (0.0, 0.0)
    )
    cx, cy = size / 2 + shift[0], size / 2 + shift[1]
    r = size * 0.28 * rng.uniform(*scale_range)
    if signature.shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=foreground)
    elif signature.shape == "square":
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=foreground)
    elif signature.shape == "cross":
        w = r / 2.5
        draw.rectangle([cx - r, cy - w, cx + r, cy + w], fill=foreground)
        draw.rectangle([cx - w, cy - r, cx + w, cy + r], fill=foreground)
    elif signature.shape == "stripes":
        band = size / 8
        for top in numpy.arange(cy % (2 * band) - 2 * band, size, 2 * band):
            draw.rectangle([0, top, size, top + band], fill=foreground)
    else:
        draw.polygon(_shape_polygon(signature.shape, cx, cy, r), fill=foreground)
    if noise:
        pixels = numpy.asarray(image, dtype=numpy.float32) + rng.normal(0, noise, (size, size, 3))
        image = Image.fromarray(pixels.clip(0, 255).astype(numpy.uint8), "RGB")
    return image


def _save_jpeg(image, path: Path) -> None:
    image.save(path, format="JPEG", quality=90)


def entity_image(signature: Signature, rng: numpy.random.Generator, variant: int):
    """A clean entity image; later variants are slightly jittered."""
    if variant == 0:
        return draw_signature(signature, rng)
    return draw_signature(
        signature, rng, colour_jitter=10, position_jitter=0.05, scale_range=(0.9, 1.1)
    )


def mention_image(signature: Signature, rng: numpy.random.Generator):
    """A noisy variant of the gold entity's signature, as a mention image."""
    return draw_signature(
        signature, rng, colour_jitter=30, position_jitter=0.15, scale_range=(0.7, 1.2), noise=12.0
    )


# Entities -------------------------------------------------------------------


def invent_names(n: int, rng: numpy.random.Generator) -> List[str]:
    """Distinct invented names; every fifth one has two words (to exercise URL quoting).

    n (int): How many names.
    rng (numpy.random.Generator): Chooses the syllables.
    RETURNS (List[str]): The names.
    """
    stems = [onset + coda for onset in ONSETS for coda in CODAS]
    if n > len(stems):
        raise ValueError(f"At most {len(stems)} demo names are available, {n} were requested.")
    order = rng.permutation(len(stems))[:n]
    names = [stems[i] for i in order]
    return [
        f"{NAME_PREFIXES[i // 5 % len(NAME_PREFIXES)]} {name}" if i % 5 == 2 else name
        for i, name in enumerate(names)
    ]


def _signatures_for_name(k: int, rng: numpy.random.Generator) -> List[Signature]:
    # Entities sharing a name differ in background colour AND shape.
    colours = list(COLOURS)
    backgrounds = [colours[i] for i in rng.permutation(len(colours))[:k]]
    shapes = [SHAPES[i] for i in rng.permutation(len(SHAPES))[:k]]
    signatures = []
    for background, shape in zip(backgrounds, shapes):
        others = [c for c in colours if c != background]
        signatures.append(Signature(background, others[int(rng.integers(len(others)))], shape))
    return signatures


def _describe(
    entity_type: EntityType, name: str, signature: Signature, rng: numpy.random.Generator
) -> str:
    text = entity_type.description.format(
        name=name,
        region=REGIONS[int(rng.integers(len(REGIONS)))],
        year=YEARS[int(rng.integers(len(YEARS)))],
        number=int(rng.integers(2, 90)),
    )
    return f"{text} Its emblem shows {describe_signature(signature)}."


def make_entities(
    n_names: int, entities_per_name: int, rng: numpy.random.Generator
) -> List[Dict[str, Any]]:
    """Invent the entities: several of different types share each name.

    n_names (int): Number of distinct names.
    entities_per_name (int): Entities per name, each of another type and signature.
    rng (numpy.random.Generator): Source of all choices.
    RETURNS (List[Dict[str, Any]]): Entities with ``qid``, ``name``, ``type``,
        ``description``, ``signature`` and ``n_images``.
    """
    limit = min(len(ENTITY_TYPES), len(SHAPES), len(COLOURS))
    if not 1 <= entities_per_name <= limit:
        raise ValueError(
            f"entities_per_name must be between 1 and {limit}, got {entities_per_name}."
        )
    if n_names < 1:
        raise ValueError(f"n_names must be at least 1, got {n_names}.")
    entities = []
    for name in invent_names(n_names, rng):
        types = [ENTITY_TYPES[i] for i in rng.permutation(len(ENTITY_TYPES))[:entities_per_name]]
        for entity_type, signature in zip(types, _signatures_for_name(entities_per_name, rng)):
            entities.append(
                {
                    "qid": f"Q{900001 + len(entities)}",
                    "name": name,
                    "type": entity_type,
                    "description": _describe(entity_type, name, signature, rng),
                    "signature": signature,
                    "n_images": int(rng.integers(1, 3)),
                }
            )
    n_without = max(1, round(NO_IMAGE_ENTITY_FRACTION * len(entities)))
    for i in rng.permutation(len(entities))[:n_without]:
        entities[i]["n_images"] = 0
    return entities


# Mentions -------------------------------------------------------------------


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
    entities: Sequence[Dict[str, Any]], mentions_per_entity: int, rng: numpy.random.Generator
) -> Dict[str, List[Dict[str, Any]]]:
    """Make the mention records, split 70/15/15 per entity so every entity is in train.

    Nil mentions (names outside the KB) are added to random splits.

    entities (Sequence[Dict[str, Any]]): The entities from :func:`make_entities`.
    mentions_per_entity (int): Mentions per entity.
    rng (numpy.random.Generator): Source of all choices.
    RETURNS (Dict[str, List[Dict[str, Any]]]): Unshuffled records per split, with
        their ``signature`` still attached.
    """
    if mentions_per_entity < 1:
        raise ValueError(f"mentions_per_entity must be at least 1, got {mentions_per_entity}.")
    splits: Dict[str, List[Dict[str, Any]]] = {split: [] for split in SPLITS}
    for entity in entities:
        records = _mention_records(entity, mentions_per_entity, rng)
        start = 0
        for split, size in zip(SPLITS, _split_sizes(len(records), rng)):
            splits[split].extend(records[start : start + size])
            start += size
    total = len(entities) * mentions_per_entity
    used = sorted({entity["name"].split()[-1] for entity in entities})
    for record in _nil_records(max(1, round(NIL_FRACTION * total)), used, rng):
        split = SPLITS[int(rng.choice(len(SPLITS), p=SPLIT_FRACTIONS))]
        splits[split].append(record)
    return splits


# Writing --------------------------------------------------------------------


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
    output_dir: Path, splits: Dict[str, List[Dict[str, Any]]], rng: numpy.random.Generator
) -> None:
    """Shuffle each split, give records ids and image paths, write them and their images.

    output_dir (Path): The dataset folder.
    splits (Dict[str, List[Dict[str, Any]]]): Records from :func:`split_mentions`.
    rng (numpy.random.Generator): Source of the order, image paths and image noise.
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
                _save_jpeg(mention_image(signature, rng), image_dir / f"{mention_id}.jpg")
                # Some paths carry a folder and another extension, as in the real data.
                png = draw < EMPTY_IMGPATH_FRACTION + PNG_IMGPATH_FRACTION
                img_path = f"images/{mention_id}.png" if png else f"{mention_id}.jpg"
            records.append({"id": mention_id, "imgPath": img_path, **record})
        _write_json(output_dir / f"{PREFIX}_{split}.json", records)


def generate_demo_dataset(
    output_dir: Union[str, Path],
    *,
    n_names: int = 40,
    entities_per_name: int = 3,
    mentions_per_entity: int = 12,
    seed: int = 0,
) -> Path:
    """Write the demo dataset in the MIMIC layout (deterministic for a seed).

    output_dir (Union[str, Path]): The dataset folder to write (files are overwritten).
    n_names (int): Number of distinct entity names.
    entities_per_name (int): Entities sharing each name (at most 6).
    mentions_per_entity (int): Mention records per entity, before the split.
    seed (int): Random seed.
    RETURNS (Path): ``output_dir``.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    rng = numpy.random.default_rng(seed)
    entities = make_entities(n_names, entities_per_name, rng)
    splits = split_mentions(entities, mentions_per_entity, rng)
    write_kb(output_dir, entities, rng)
    write_mentions(output_dir, splits, rng)
    return output_dir


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
