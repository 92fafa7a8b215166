"""The invented entities of the demo: names, types, descriptions and signatures.

Several invented entities of different types share each name (a basketball
player, a river and a ship all called "Velmora"); entities sharing a name differ
in emblem background colour and shape, and their descriptions mention the emblem.
In the hard demo entities sharing a name share their type and emblem colours and
differ only in the emblem's shape and pattern.
"""

from dataclasses import dataclass
from typing import Any, Dict, List, Tuple

import numpy

from .demo_images import COLOURS, OBJECT_SHAPES, PATTERNS, SHAPES, Signature, describe_signature

NO_IMAGE_ENTITY_FRACTION = 0.05

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


def check_flag(setting: str, value: Any) -> None:
    """Refuse a non-boolean value of an on/off setting.

    setting (str): The setting's name, for the message.
    value (Any): The value given.
    RAISES (ValueError): If ``value`` is not True or False.
    """
    if not isinstance(value, bool):
        raise ValueError(f"{setting} must be True or False, got {value!r}.")


def _hard_signatures(k: int, rng: numpy.random.Generator) -> List[Signature]:
    # One background and one foreground colour for all k; siblings 2i and 2i + 1
    # share a shape and differ only in the pattern.
    colours = list(COLOURS)
    background, foreground = (colours[i] for i in rng.permutation(len(colours))[:2])
    shapes = [OBJECT_SHAPES[i] for i in rng.permutation(len(OBJECT_SHAPES))]
    patterns = [PATTERNS[i] for i in rng.permutation(len(PATTERNS))]
    return [
        Signature(background, foreground, shapes[i // 2], patterns[i % len(patterns)])
        for i in range(k)
    ]


def _signatures_for_name(
    k: int, rng: numpy.random.Generator, fine: bool = False, hard: bool = False
) -> List[Signature]:
    # Entities sharing a name differ in background colour AND shape; with ``fine``
    # only in the shape's colour (same background, same shape); with ``hard`` only
    # in shape and pattern (same colours).
    if hard:
        return _hard_signatures(k, rng)
    colours = list(COLOURS)
    if fine:
        background = colours[int(rng.integers(len(colours)))]
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        others = [c for c in colours if c != background]
        picks = rng.permutation(len(others))[:k]
        return [Signature(background, others[i], shape) for i in picks]
    backgrounds = [colours[i] for i in rng.permutation(len(colours))[:k]]
    shapes = [SHAPES[i] for i in rng.permutation(len(SHAPES))[:k]]
    signatures = []
    for background, shape in zip(backgrounds, shapes):
        others = [c for c in colours if c != background]
        signatures.append(Signature(background, others[int(rng.integers(len(others)))], shape))
    return signatures


def _describe(
    entity_type: EntityType,
    name: str,
    signature: Signature,
    rng: numpy.random.Generator,
    with_pattern: bool = False,
) -> str:
    text = entity_type.description.format(
        name=name,
        region=REGIONS[int(rng.integers(len(REGIONS)))],
        year=YEARS[int(rng.integers(len(YEARS)))],
        number=int(rng.integers(2, 90)),
    )
    emblem = describe_signature(signature, with_pattern=with_pattern)
    return f"{text} Its emblem shows {emblem}."


def make_entities(
    n_names: int,
    entities_per_name: int,
    rng: numpy.random.Generator,
    no_image_fraction: float = NO_IMAGE_ENTITY_FRACTION,
    fine_siblings: bool = False,
    hard: bool = False,
) -> List[Dict[str, Any]]:
    """Invent the entities: several of different types share each name.

    n_names (int): Number of distinct names.
    entities_per_name (int): Entities per name, each of another type and signature.
    rng (numpy.random.Generator): Source of all choices.
    no_image_fraction (float): Share of entities without any image (at least one
        entity when positive), as in RichpediaMEL and WikiDiverse (40-50%).
    fine_siblings (bool): Entities sharing a name differ only in their emblem's
        foreground colour (told apart by fine visual detail), not in background and shape.
    hard (bool): Entities sharing a name share their type (so the same sentence
        templates) and emblem colours, and differ only in the emblem's shape and
        pattern, which their descriptions name.
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
    if not 0.0 <= no_image_fraction < 1.0:
        raise ValueError(f"no_image_fraction must be in [0, 1), got {no_image_fraction}.")
    check_flag("hard", hard)
    if fine_siblings and hard:
        raise ValueError(
            "fine_siblings and hard cannot both be True: fine siblings differ in the "
            "emblem's colour, hard ones share it. Set at most one of them."
        )
    entities = []
    for name in invent_names(n_names, rng):
        order = rng.permutation(len(ENTITY_TYPES))
        types = [ENTITY_TYPES[order[0 if hard else i]] for i in range(entities_per_name)]
        signatures = _signatures_for_name(entities_per_name, rng, fine_siblings, hard)
        for entity_type, signature in zip(types, signatures):
            entities.append(
                {
                    "qid": f"Q{900001 + len(entities)}",
                    "name": name,
                    "type": entity_type,
                    "description": _describe(entity_type, name, signature, rng, hard),
                    "signature": signature,
                    "n_images": int(rng.integers(1, 3)),
                }
            )
    n_without = round(no_image_fraction * len(entities))
    if no_image_fraction > 0:
        n_without = max(1, n_without)
    for i in rng.permutation(len(entities))[:n_without]:
        entities[i]["n_images"] = 0
    return entities
