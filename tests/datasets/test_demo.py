"""The synthetic demo dataset: deterministic, MIMIC layout, images needed to disambiguate."""

import hashlib
import json
from collections import defaultdict
from pathlib import Path
from typing import Dict, List

import numpy
import pytest
from PIL import Image

from spacy_m3el.datasets import generate_demo_dataset, make_demo_corpus_texts, prepare_dataset
from spacy_m3el.datasets.demo import AMBIGUOUS_TEMPLATES, ENTITY_TYPES, make_entities

SIZES = dict(n_names=10, entities_per_name=3, mentions_per_entity=10)
CUES = {entity_type.name: entity_type.cue for entity_type in ENTITY_TYPES}


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    return generate_demo_dataset(tmp_path_factory.mktemp("demo"), seed=3, **SIZES)


def read(path: Path):
    return json.loads(path.read_text(encoding="utf8"))


def mention_records(root: Path) -> Dict[str, List[dict]]:
    return {split: read(root / f"DEMO_{split}.json") for split in ("train", "dev", "test")}


def all_files(root: Path) -> Dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_same_seed_same_bytes(demo_dir: Path, tmp_path: Path):
    again = generate_demo_dataset(tmp_path / "again", seed=3, **SIZES)
    assert all_files(again) == all_files(demo_dir)
    other = generate_demo_dataset(tmp_path / "other", seed=4, **SIZES)
    assert (other / "kb_entity.json").read_bytes() != (demo_dir / "kb_entity.json").read_bytes()


def test_layout(demo_dir: Path):
    entities = read(demo_dir / "kb_entity.json")
    assert len(entities) == 30
    assert [e["id"] for e in entities] == list(range(30))
    assert all(set(e) == {"id", "type", "entity_name", "desc", "image_list"} for e in entities)
    assert len((demo_dir / "qid2id.json").read_text().strip().splitlines()) == 1
    assert sorted(read(demo_dir / "qid2id.json").values()) == list(range(30))
    for e in entities:
        for name in e["image_list"]:
            with Image.open(demo_dir / "kb_image" / name) as image:
                assert image.format == "JPEG"
    for records in mention_records(demo_dir).values():
        for record in records:
            assert set(record) == {"id", "mentions", "sentence", "imgPath", "answer", "entities"}


def test_prepare_demo(demo_dir: Path, tmp_path: Path):
    report = prepare_dataset("demo", demo_dir, tmp_path / "out", tmp_path / "kb")
    total = sum(split.records for split in report.splits.values())
    assert 0.65 < report.splits["train"].records / total < 0.75
    for split in report.splits.values():
        assert split.gold_missing_from_kb == split.unsafe_image_path == split.image_missing == 0
        assert split.mention_not_in_sentence == split.mention_token_split == 0
        assert split.kept + split.nil == split.records
    assert sum(split.nil for split in report.splits.values()) >= 1
    assert sum(split.image_empty_path for split in report.splits.values()) >= 1
    assert report.kb.entities == 30 and report.kb.kb_images_missing == 0
    assert 1 <= report.kb.entities_without_images <= 3
    assert report.kb.text_field == "desc"


def test_every_entity_is_in_train(demo_dir: Path):
    splits = mention_records(demo_dir)
    train_qids = {r["answer"] for r in splits["train"]}
    assert train_qids >= set(read(demo_dir / "qid2id.json"))
    assert {r["answer"] for r in splits["dev"] + splits["test"]} - {"nil", "NIL"} <= train_qids


def test_names_are_shared_and_types_differ(demo_dir: Path):
    by_name = defaultdict(list)
    for entity in read(demo_dir / "kb_entity.json"):
        by_name[entity["entity_name"]].append(entity["type"])
    assert len(by_name) == SIZES["n_names"]
    assert all(len(types) == len(set(types)) == 3 for types in by_name.values())
    assert any("%20" in name for name in by_name)  # multi-word names are URL-quoted


def test_signatures_differ_within_a_name():
    entities = make_entities(12, 4, numpy.random.default_rng(0))
    by_name = defaultdict(list)
    for entity in entities:
        by_name[entity["name"]].append(entity["signature"])
    for signatures in by_name.values():
        assert len({s.background for s in signatures}) == len({s.shape for s in signatures}) == 4
        assert all(s.background != s.foreground for s in signatures)


def test_mentions_ambiguous_fraction_and_cues(demo_dir: Path):
    cue_of = {e["id"]: CUES[e["type"]] for e in read(demo_dir / "kb_entity.json")}
    qid2id = read(demo_dir / "qid2id.json")
    records = [
        r for rs in mention_records(demo_dir).values() for r in rs if r["answer"].lower() != "nil"
    ]
    ambiguous = [
        r
        for r in records
        if r["sentence"] in {t.format(name=r["entities"]) for t in AMBIGUOUS_TEMPLATES}
    ]
    assert len(ambiguous) / len(records) == pytest.approx(0.6, abs=0.05)
    for record in records:
        has_cue = cue_of[qid2id[record["answer"]]] in record["sentence"]
        assert has_cue != (record in ambiguous)
    all_cues = set(CUES.values())
    assert not any(cue in template for template in AMBIGUOUS_TEMPLATES for cue in all_cues)


def test_quirks_present(demo_dir: Path):
    records = [r for rs in mention_records(demo_dir).values() for r in rs]
    assert any("%20" in r["mentions"] for r in records)
    assert any(r["answer"] == "nil" for r in records)
    assert any(r["imgPath"] == "" for r in records)
    assert any(r["imgPath"].endswith(".png") and "/" in r["imgPath"] for r in records)


def test_mention_images_follow_gold_signature(demo_dir: Path):
    """A mention image's mean colour is closer to its gold entity's image than its namesakes'."""
    entities = read(demo_dir / "kb_entity.json")
    qid2id = read(demo_dir / "qid2id.json")
    mean = lambda path: numpy.asarray(Image.open(path), dtype=float).mean(axis=(0, 1))  # noqa: E731
    by_name = defaultdict(list)
    for e in entities:
        if e["image_list"]:
            by_name[e["entity_name"]].append(e)
    hits = total = 0
    for record in mention_records(demo_dir)["train"]:
        gold = entities[qid2id[record["answer"]]] if record["answer"] in qid2id else None
        if gold is None or not gold["image_list"] or record["imgPath"] == "":
            continue
        image = mean(demo_dir / "mention_image" / f"{record['id']}.jpg")
        distances = {
            e["id"]: numpy.linalg.norm(image - mean(demo_dir / "kb_image" / e["image_list"][0]))
            for e in by_name[gold["entity_name"]]
        }
        hits += min(distances, key=distances.get) == gold["id"]
        total += 1
    assert total > 50 and hits / total > 0.9


def test_corpus_texts(demo_dir: Path):
    texts = make_demo_corpus_texts(demo_dir)
    entities = read(demo_dir / "kb_entity.json")
    assert entities[0]["desc"] in texts
    assert any(" " in text and "%20" not in text for text in texts[: 2 * len(entities) : 2])
    assert read(demo_dir / "DEMO_test.json")[0]["sentence"] in texts


def test_bad_sizes(tmp_path: Path):
    with pytest.raises(ValueError, match="entities_per_name"):
        generate_demo_dataset(tmp_path, entities_per_name=9)
    with pytest.raises(ValueError, match="names"):
        generate_demo_dataset(tmp_path, n_names=10_000)


def test_share_of_image_less_entities_is_a_setting():
    for fraction in (0.0, 0.45):
        entities = make_entities(20, 3, numpy.random.default_rng(0), no_image_fraction=fraction)
        without = sum(entity["n_images"] == 0 for entity in entities)
        assert without == round(fraction * len(entities))
    with pytest.raises(ValueError, match="no_image_fraction"):
        make_entities(2, 2, numpy.random.default_rng(0), no_image_fraction=1.0)


def test_fine_siblings_differ_only_in_the_foreground_colour():
    entities = make_entities(8, 4, numpy.random.default_rng(1), fine_siblings=True)
    by_name = defaultdict(list)
    for entity in entities:
        by_name[entity["name"]].append(entity["signature"])
    for signatures in by_name.values():
        assert len({(s.background, s.shape) for s in signatures}) == 1
        assert len({s.foreground for s in signatures}) == len(signatures)
        assert all(s.foreground != s.background for s in signatures)


def test_ensure_demo_dataset_regenerates_only_for_other_settings(tmp_path: Path):
    from spacy_m3el.datasets.demo import ensure_demo_dataset

    small = dict(n_names=3, entities_per_name=2, mentions_per_entity=4)
    assert ensure_demo_dataset(tmp_path, no_image_fraction=0.0, **small)
    assert not ensure_demo_dataset(tmp_path, no_image_fraction=0.0, **small)
    assert ensure_demo_dataset(tmp_path, no_image_fraction=0.5, **small)
    kb = read(tmp_path / "kb_entity.json")
    assert sum(not entity["image_list"] for entity in kb) == 3


# Digests of the files of small demos made with the code before the hard demo existed
# (Pillow 13.0.0 and numpy 2.4.6 as pinned in constraints.txt): the default demo and the
# fine-siblings demo must stay byte for byte what they were.
GOLDEN_SIZES = dict(n_names=6, entities_per_name=3, mentions_per_entity=6, seed=5)
GOLDEN_DIGESTS = {
    False: "5dad3d6d890f2da27d79ff210cf2671e4dfe286f1e31be6431331afed089f40e",
    True: "3b62206bd50f27300ced614bca2cc3477acc04ea4e184cd29167ce85145af83b",
}


def files_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for name, content in all_files(root).items():
        digest.update(name.encode("utf8") + b"\0" + content)
    return digest.hexdigest()


@pytest.mark.parametrize("fine_siblings", [False, True])
def test_default_demo_bytes_are_unchanged(tmp_path: Path, fine_siblings: bool):
    root = generate_demo_dataset(tmp_path, fine_siblings=fine_siblings, **GOLDEN_SIZES)
    assert files_digest(root) == GOLDEN_DIGESTS[fine_siblings]
