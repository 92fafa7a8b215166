"""The hard demo: same-coloured siblings, patterns, cluttered mention images, zero-shot entities."""

import io
import json
from collections import defaultdict
from pathlib import Path
from typing import Dict, List

import numpy
import pytest
from PIL import Image

from spacy_m3el.datasets import generate_demo_dataset
from spacy_m3el.datasets.demo import (
    COLOURS,
    PATTERNS,
    ZERO_SHOT_FRACTION,
    Signature,
    describe_signature,
    draw_signature,
    ensure_demo_dataset,
    entity_image,
    make_entities,
    mention_image,
    split_mentions,
)

SIZES = dict(n_names=10, entities_per_name=3, mentions_per_entity=10)
SEED = 3


@pytest.fixture(scope="module")
def hard_dir(tmp_path_factory) -> Path:
    return generate_demo_dataset(tmp_path_factory.mktemp("hard"), hard=True, seed=SEED, **SIZES)


@pytest.fixture(scope="module")
def default_dir(tmp_path_factory) -> Path:
    return generate_demo_dataset(tmp_path_factory.mktemp("default"), seed=SEED, **SIZES)


def read(path: Path):
    return json.loads(path.read_text(encoding="utf8"))


def mention_records(root: Path) -> Dict[str, List[dict]]:
    return {split: read(root / f"DEMO_{split}.json") for split in ("train", "dev", "test")}


def signatures_by_qid(root: Path, hard: bool = True) -> Dict[str, Signature]:
    """The signatures of the demo at ``root``, made again as the driver made them (first)."""
    entities = make_entities(
        SIZES["n_names"], SIZES["entities_per_name"], numpy.random.default_rng(SEED), hard=hard
    )
    kb = read(root / "kb_entity.json")
    assert [e["description"] for e in entities] == [e["desc"] for e in kb]
    return {entity["qid"]: entity["signature"] for entity in entities}


def siblings(entities: List[dict]) -> List[List[dict]]:
    by_name = defaultdict(list)
    for entity in entities:
        by_name[entity["name"]].append(entity)
    return list(by_name.values())


def off_palette_share(image: Image.Image, signature: Signature) -> float:
    """Share of pixels whose nearest demo colour is neither of the signature's colours."""
    names = list(COLOURS)
    palette = numpy.array([COLOURS[name] for name in names], dtype=float)
    pixels = numpy.asarray(image.convert("RGB"), dtype=float).reshape(-1, 3)
    nearest = ((pixels[:, None, :] - palette[None]) ** 2).sum(-1).argmin(axis=1)
    own = {names.index(signature.background), names.index(signature.foreground)}
    return float(numpy.mean([i not in own for i in nearest]))


def jpeg_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def test_siblings_share_type_and_colours_and_differ_in_shape_or_pattern():
    entities = make_entities(30, 4, numpy.random.default_rng(0), hard=True)
    only_pattern = 0
    for group in siblings(entities):
        signatures = [entity["signature"] for entity in group]
        assert len({(s.background, s.foreground) for s in signatures}) == 1
        assert signatures[0].background != signatures[0].foreground
        assert len({(s.shape, s.pattern) for s in signatures}) == len(signatures)
        assert len({entity["type"].name for entity in group}) == 1
        for i, first in enumerate(signatures):
            only_pattern += sum(
                first.shape == second.shape and first.pattern != second.pattern
                for second in signatures[i + 1 :]
            )
        assert "stripes" not in {s.shape for s in signatures}
    assert only_pattern >= 30
    assert {entity["signature"].pattern for entity in entities} == set(PATTERNS)


def test_descriptions_name_shape_and_pattern():
    entities = make_entities(5, 3, numpy.random.default_rng(0), hard=True)
    for entity in entities:
        signature = entity["signature"]
        assert describe_signature(signature, with_pattern=True) in entity["description"]
        assert f" {signature.pattern} " in entity["description"]
        assert f" {signature.shape} " in entity["description"]
    dotted = Signature("blue", "red", "circle", "dotted")
    assert describe_signature(dotted) == "a dotted red circle on blue"
    plain = Signature("blue", "orange", "circle")
    assert describe_signature(plain) == "an orange circle on blue"
    assert describe_signature(plain, with_pattern=True) == "a plain orange circle on blue"
    assert describe_signature(Signature("white", "red", "stripes", "ringed")) == (
        "ringed red stripes on white"
    )


def test_patterns_draw_differently_and_plain_as_before():
    rng = numpy.random.default_rng(0)
    drawn = {
        pattern: numpy.asarray(draw_signature(Signature("blue", "red", "square", pattern), rng))
        for pattern in PATTERNS
    }
    plain = drawn.pop("plain")
    assert numpy.array_equal(
        plain, numpy.asarray(draw_signature(Signature("blue", "red", "square"), rng))
    )
    red = numpy.array(COLOURS["red"])
    red_pixels = lambda image: int((image == red).all(axis=-1).sum())  # noqa: E731
    for pattern, image in drawn.items():
        # The pattern's holes show the background: fewer red pixels, but still many.
        assert 0.4 * red_pixels(plain) < red_pixels(image) < 0.9 * red_pixels(plain), pattern
    assert len({image.tobytes() for image in drawn.values()}) == len(drawn)


@pytest.mark.parametrize("pattern", ["plain", "hatched"])
def test_clutter_goes_around_the_emblem_which_stays_whole(pattern: str):
    signature = Signature("blue", "red", "circle", pattern)
    others = [Signature("green", "yellow", "square"), Signature("white", "black", "cross")]
    clean = numpy.asarray(draw_signature(signature, numpy.random.default_rng(0)))
    cluttered = numpy.asarray(
        draw_signature(signature, numpy.random.default_rng(0), clutter=others)
    )
    changed = (clean != cluttered).any(axis=-1)
    assert changed.sum() > 2 * 15 * 15 * 0.8  # two tiles of at least a quarter of 64 pixels
    red = numpy.array(COLOURS["red"])
    assert numpy.array_equal((clean == red).all(-1), (cluttered == red).all(-1))
    assert not changed[24:40, 24:40].any()  # the middle is the emblem's
    with pytest.raises(ValueError, match="clutter"):
        draw_signature(signature, numpy.random.default_rng(0), clutter=others * 3)


def test_mention_image_clutter_comes_from_the_pool():
    signature = Signature("blue", "red", "circle")
    assert (
        off_palette_share(mention_image(signature, numpy.random.default_rng(0)), signature) < 0.02
    )
    pool = [signature, Signature("green", "yellow", "square"), Signature("white", "black", "cross")]
    shares = [
        off_palette_share(mention_image(signature, numpy.random.default_rng(seed), pool), signature)
        for seed in range(10)
    ]
    assert min(shares) > 0.05
    assert entity_image(signature, numpy.random.default_rng(0), 0).tobytes() == (
        draw_signature(signature, numpy.random.default_rng(1)).tobytes()
    )


def test_hard_demo_mention_images_are_cluttered_and_kb_images_clean(
    hard_dir: Path, default_dir: Path
):
    signatures = signatures_by_qid(hard_dir)
    qid2id = read(hard_dir / "qid2id.json")
    kb = read(hard_dir / "kb_entity.json")
    for qid, signature in signatures.items():
        files = kb[qid2id[qid]]["image_list"]
        if files:  # the first entity image is the clean drawing itself
            clean = jpeg_bytes(draw_signature(signature, numpy.random.default_rng(0)))
            assert (hard_dir / "kb_image" / files[0]).read_bytes() == clean

    def median_share(root: Path, hard: bool) -> float:
        by_qid = signatures_by_qid(root, hard)
        shares = []
        for record in mention_records(root)["train"]:
            if record["answer"] in by_qid and record["imgPath"]:
                with Image.open(root / "mention_image" / f"{record['id']}.jpg") as image:
                    shares.append(off_palette_share(image, by_qid[record["answer"]]))
        return float(numpy.median(shares))

    assert median_share(hard_dir, hard=True) > 0.1
    assert median_share(default_dir, hard=False) < 0.02


def test_a_quarter_of_the_entities_are_zero_shot(hard_dir: Path):
    splits = mention_records(hard_dir)
    qids = set(read(hard_dir / "qid2id.json"))
    train = {record["answer"] for record in splits["train"]}
    held_out = {record["answer"] for record in splits["dev"] + splits["test"]}
    zero_shot = qids - train
    assert len(zero_shot) == round(ZERO_SHOT_FRACTION * len(qids)) == 8
    assert zero_shot <= held_out
    assert held_out - {"nil", "NIL"} <= qids


@pytest.mark.parametrize("mentions_per_entity", [1, 2, 12])
def test_zero_shot_entities_always_have_a_held_out_mention(mentions_per_entity: int):
    rng = numpy.random.default_rng(0)
    entities = make_entities(6, 2, rng, hard=True)
    splits = split_mentions(entities, mentions_per_entity, rng, zero_shot_fraction=0.25)
    train = {record["answer"] for record in splits["train"]}
    held_out = {record["answer"] for record in splits["dev"] + splits["test"]}
    zero_shot = {entity["qid"] for entity in entities} - train
    assert len(zero_shot) == 3 and zero_shot <= held_out


def test_same_seed_same_bytes(hard_dir: Path, default_dir: Path, tmp_path: Path):
    def files(root: Path) -> Dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}

    again = generate_demo_dataset(tmp_path / "again", hard=True, seed=SEED, **SIZES)
    assert files(again) == files(hard_dir)
    other = generate_demo_dataset(tmp_path / "other", hard=True, seed=SEED + 1, **SIZES)
    assert (other / "kb_entity.json").read_bytes() != (hard_dir / "kb_entity.json").read_bytes()
    assert (default_dir / "kb_entity.json").read_bytes() != (
        hard_dir / "kb_entity.json"
    ).read_bytes()


def test_hard_is_recorded_in_the_settings_and_regenerates(tmp_path: Path):
    small = dict(n_names=3, entities_per_name=2, mentions_per_entity=4)
    marker = tmp_path / "demo_settings.json"
    assert ensure_demo_dataset(tmp_path, hard=False, **small)
    assert read(marker)["hard"] is False
    before = marker.read_bytes()
    assert ensure_demo_dataset(tmp_path, hard=True, **small)
    assert read(marker)["hard"] is True and marker.read_bytes() != before
    descriptions = [entity["desc"] for entity in read(tmp_path / "kb_entity.json")]
    assert all(any(f" {p} " in desc for p in PATTERNS) for desc in descriptions)
    assert not ensure_demo_dataset(tmp_path, hard=True, **small)
    assert ensure_demo_dataset(tmp_path, **small)  # back to the default demo


def test_a_marker_from_before_the_hard_demo_still_matches(tmp_path: Path):
    small = dict(n_names=3, entities_per_name=2, mentions_per_entity=4)
    assert ensure_demo_dataset(tmp_path, no_image_fraction=0.0, **small)
    (tmp_path / "demo_settings.json").write_text(
        json.dumps(dict(no_image_fraction=0.0, **small)), encoding="utf8"
    )
    assert not ensure_demo_dataset(tmp_path, no_image_fraction=0.0, hard=False, **small)
    assert ensure_demo_dataset(tmp_path, no_image_fraction=0.0, hard=True, **small)


def test_bad_settings_are_named(tmp_path: Path):
    rng = numpy.random.default_rng(0)
    with pytest.raises(ValueError, match="hard must be True or False"):
        generate_demo_dataset(tmp_path, hard="yes")
    with pytest.raises(ValueError, match="hard must be True or False"):
        make_entities(2, 2, rng, hard=1)
    with pytest.raises(ValueError, match="fine_siblings and hard"):
        generate_demo_dataset(tmp_path, hard=True, fine_siblings=True)
    with pytest.raises(ValueError, match="pattern must be one of plain, dotted"):
        Signature("blue", "red", "circle", "striped")
    with pytest.raises(ValueError, match=r"zero_shot_fraction must be in \[0, 1\)"):
        split_mentions(make_entities(2, 2, rng), 4, rng, zero_shot_fraction=1.0)
