"""Preparation of MIMIC-format datasets: every quirk of the real files, exact counts."""

import json
from pathlib import Path
from typing import Any, Dict, List

import pytest
import spacy
from spacy.tokens import DocBin

from spacy_m3el.datasets import DatasetError, prepare_dataset
from spacy_m3el.datasets.mimic import find_mention, is_unsafe_name, resolve_mention_image
from spacy_m3el.images import install_image_extension
from spacy_m3el.kb import MultimodalKB

JPEG = b"\xff\xd8\xff\xe0 not really a jpeg but not empty"

KB_RECORDS = [
    # URL-quoted name; one listed image does not exist.
    {
        "id": 0,
        "type": "entity",
        "entity_name": "Velmora%20River",
        "attr": "a river",
        "image_list": ["e0.jpg", "e0_missing.jpg"],
    },
    {
        "id": 1,
        "type": "entity",
        "entity_name": "Velmora",
        "attr": "a player",
        "image_list": ["e1.jpg"],
    },
    {"id": 2, "type": "entity", "entity_name": "Kastrel", "attr": "a band", "image_list": []},
    # The only image escapes kb_image/: refused, so the entity has no images.
    {
        "id": 3,
        "type": "entity",
        "entity_name": "Orvane",
        "attr": "a city",
        "image_list": ["../secret.jpg"],
    },
    # Its own qid field wins over qid2id and duplicates entity 1.
    {
        "id": 4,
        "type": "entity",
        "entity_name": "Velmora",
        "attr": "dup",
        "image_list": [],
        "qid": "Q1",
    },
    # id 5 is not in qid2id.
    {"id": 5, "type": "entity", "entity_name": "Nobody", "attr": "no qid", "image_list": []},
    # A qid field absent from qid2id; the image is in a subfolder of kb_image/.
    {
        "id": 6,
        "type": "entity",
        "entity_name": "Talwick",
        "attr": "a ship",
        "image_list": ["sub/e6.jpg"],
        "qid": "Q60",
    },
]
QID2ID = {"Q0": 0, "Q1": 1, "Q2": 2, "Q3": 3, "Q4": 4}


def mention(
    mentions: str, sentence: str, answer: str, img_path: str = "", **extra: Any
) -> Dict[str, Any]:
    return {
        "id": len(sentence),
        "mentions": mentions,
        "sentence": sentence,
        "imgPath": img_path,
        "answer": answer,
        "entities": "",
        **extra,
    }


TRAIN = [
    mention(
        "Velmora%20River", "We sailed down the Velmora River.", "Q0", "imgs/m1.png"
    ),  # dir + .png
    mention("velmora", "Velmora was in the news.", "Q1", "m2.jpg"),  # case-insensitive match
    mention("Kastrel Hawks", "Nothing here.", "Q2", ""),  # not in sentence, empty imgPath
    mention("Velmora", "Velmora", "nil", "m1.jpg"),
    mention("Velmora", "Velmora", "NIL", "m1.jpg"),
    mention("Ghost", "Ghost town.", "Q999", "m1.jpg"),  # gold missing from the KB
    mention("Velmora", "Velmora again.", "Q1", "../../etc/passwd.jpg"),  # unsafe
    mention("Talwick", "Talwick's ship.", "Q60", "m5.png"),  # only m5.png exists
    mention("Orvane", "Orvanese food is great.", "Q3", "gone.jpg"),  # inside a token; image missing
]
DEV = [
    mention("Velmora%20Falls", "Velmora Falls at night.", "Q0", "m1.jpg"),
    mention("Q", "Q", "Q777", "m1.jpg"),
]
TEST = [
    mention("The%20Kastrel", "The Kastrel team won.", "Q2", "/abs/path/m2.jpg"),  # absolute: unsafe
    mention("%20", "Blank mention.", "Q1", "m1.jpg"),
]


def write_json(path: Path, data: Any, indent: Any = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=indent), encoding="utf8")


def write_dataset(
    root: Path,
    prefix: str,
    splits: Dict[str, List[dict]],
    kb_records: List[dict],
    qid2id: Dict[str, int],
    mention_dir: str = "mention_images",
) -> Path:
    for split, records in splits.items():
        write_json(root / f"{prefix}_{split}.json", records, indent=1)
    write_json(root / "kb_entity.json", kb_records, indent=1)
    write_json(root / "qid2id.json", qid2id)  # one line, like the real file
    for name in ("e0.jpg", "e1.jpg", "sub/e6.jpg"):
        (root / "kb_image" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "kb_image" / name).write_bytes(JPEG + name.encode())
    (root / mention_dir).mkdir(parents=True, exist_ok=True)
    for name in ("m1.jpg", "m2.jpg", "m5.png"):
        (root / mention_dir / name).write_bytes(JPEG + name.encode())
    (root / "secret.jpg").write_bytes(JPEG)
    return root


@pytest.fixture
def dataset_dir(tmp_path: Path) -> Path:
    return write_dataset(
        tmp_path / "WikiMEL",
        "WIKIMEL",
        {"train": TRAIN, "dev": DEV, "test": TEST},
        KB_RECORDS,
        QID2ID,
    )


@pytest.fixture
def prepared(dataset_dir: Path, tmp_path: Path):
    report = prepare_dataset("wikimel", dataset_dir, tmp_path / "out", tmp_path / "kb")
    return report, tmp_path / "out", tmp_path / "kb"


def read_docs(path: Path) -> list:
    install_image_extension()
    return list(DocBin().from_disk(path).get_docs(spacy.blank("en").vocab))


def load_kb(path: Path) -> MultimodalKB:
    kb = MultimodalKB(spacy.blank("en").vocab)
    kb.from_disk(path)
    return kb


def test_split_counts(prepared):
    report = prepared[0]
    counts = {split: report.splits[split] for split in ("train", "dev", "test")}
    train = counts["train"]
    assert (train.records, train.kept, train.nil, train.gold_missing_from_kb) == (9, 6, 2, 1)
    assert (
        train.image_found,
        train.image_missing,
        train.image_empty_path,
        train.unsafe_image_path,
    ) == (3, 1, 1, 1)
    assert (train.mention_not_in_sentence, train.mention_token_split) == (1, 1)
    assert train.gold_missing_examples == ["Q999"]
    dev = counts["dev"]
    assert (dev.records, dev.kept, dev.gold_missing_from_kb, dev.image_found) == (2, 1, 1, 1)
    assert dev.gold_missing_examples == ["Q777"]
    test = counts["test"]
    assert (test.records, test.kept, test.empty_mention, test.unsafe_image_path) == (2, 1, 1, 1)
    for split in counts.values():
        skipped = (
            split.nil + split.gold_missing_from_kb + split.empty_mention + split.skipped_by_limit
        )
        assert split.kept + skipped == split.records
        images = (
            split.image_found
            + split.image_missing
            + split.image_empty_path
            + split.unsafe_image_path
        )
        assert images == split.kept


def test_kb_counts_and_folders(prepared):
    report = prepared[0]
    kb = report.kb
    assert (kb.records, kb.entities, kb.entities_without_images, kb.images) == (7, 5, 2, 3)
    assert (kb.kb_images_missing, kb.kb_unsafe_image_paths, kb.duplicate_qids, kb.no_qid) == (
        1,
        1,
        1,
        1,
    )
    assert kb.text_field == "attr"
    assert kb.aliases == 12
    assert report.mention_image_folder == "mention_images"
    assert report.mention_image_fallback


def test_report_file_and_table(prepared):
    report, out, _ = prepared
    assert json.loads((out / "report.json").read_text()) == report.to_dict()
    table = report.format_table()
    assert "mention_not_in_sentence" in table and "Q999" in table
    assert "mention_images" in table and "fallback" in table
    assert len(table.splitlines()) > 15


def test_train_docs(prepared, dataset_dir: Path):
    docs = read_docs(prepared[1] / "train.spacy")
    assert len(docs) == 6
    ents = [(doc.ents[0].text, doc.ents[0].label_, doc.ents[0].kb_id_) for doc in docs]
    assert ents == [
        ("Velmora River", "ENT", "Q0"),
        ("Velmora", "ENT", "Q1"),
        ("Kastrel Hawks", "ENT", "Q2"),
        ("Velmora", "ENT", "Q1"),
        ("Talwick", "ENT", "Q60"),
        ("Orvane", "ENT", "Q3"),
    ]
    assert all(len(doc.ents) == 1 for doc in docs)
    assert docs[2].text == "Kastrel Hawks : Nothing here."
    assert docs[5].text == "Orvanese food is great."
    assert [t.text for t in docs[5]][:2] == ["Orvane", "se"]
    images = dataset_dir.absolute() / "mention_images"
    assert [doc._.image for doc in docs] == [
        str(images / "m1.jpg"),
        str(images / "m2.jpg"),
        None,
        None,
        str(images / "m5.png"),
        None,
    ]


def test_dev_and_test_docs(prepared):
    dev = read_docs(prepared[1] / "dev.spacy")
    assert [(d.ents[0].text, d.ents[0].kb_id_) for d in dev] == [("Velmora Falls", "Q0")]
    test = read_docs(prepared[1] / "test.spacy")
    assert [(d.ents[0].text, d.ents[0].kb_id_, d._.image) for d in test] == [
        ("The Kastrel", "Q2", None)
    ]


def test_kb_round_trip(prepared, dataset_dir: Path):
    kb = load_kb(prepared[2])
    assert kb.entity_ids == ["Q0", "Q1", "Q2", "Q3", "Q60"]
    kb_images = dataset_dir.absolute() / "kb_image"
    q0 = kb.get_record("Q0")
    assert (q0.name, q0.description, q0.images) == (
        "Velmora River",
        "a river",
        (str(kb_images / "e0.jpg"),),
    )
    assert kb.get_record("Q1").description == "a player"
    assert kb.get_record("Q3").images == ()
    assert kb.get_record("Q60").images == (str(kb_images / "sub" / "e6.jpg"),)


def test_aliases_come_from_train_only(prepared):
    kb = load_kb(prepared[2])
    candidates = lambda text: sorted(c.entity_ for c in kb.get_alias_candidates(text))  # noqa: E731
    assert candidates("Velmora") == ["Q1"]
    assert candidates("Velmora River") == ["Q0"]
    assert candidates("Kastrel Hawks") == ["Q2"]
    assert candidates("kastrel hawks") == ["Q2"]
    for unseen in ("Velmora Falls", "velmora falls", "The Kastrel", "the kastrel"):
        assert not kb.contains_alias(unseen)


def test_embed_images(dataset_dir: Path, tmp_path: Path):
    prepare_dataset("wikimel", dataset_dir, tmp_path / "out", tmp_path / "kb", embed_images=True)
    docs = read_docs(tmp_path / "out" / "train.spacy")
    assert docs[0]._.image == (dataset_dir / "mention_images" / "m1.jpg").read_bytes()
    assert docs[2]._.image is None
    record = load_kb(tmp_path / "kb").get_record("Q0")
    assert record.images == ((dataset_dir / "kb_image" / "e0.jpg").read_bytes(),)


def test_limit_is_counted(dataset_dir: Path, tmp_path: Path):
    report = prepare_dataset("wikimel", dataset_dir, tmp_path / "out", tmp_path / "kb", limit=2)
    train = report.splits["train"]
    assert (train.records, train.kept, train.skipped_by_limit) == (9, 2, 7)
    assert report.kb.entities == 5


def test_desc_field_record_type_and_mention_image_folder(tmp_path: Path):
    records = [dict(r, desc=f"desc of {r['entity_name']}") for r in KB_RECORDS]
    train = [mention("Kastrel", "Kastrel played.", "Q2", "m1.jpg", type="ORG")]
    root = write_dataset(
        tmp_path / "ds",
        "RichpediaMEL",
        {"train": train, "dev": [], "test": []},
        records,
        QID2ID,
        mention_dir="mention_image",
    )
    write_json(root / "qid2id.json", QID2ID, indent=2)  # multi-line JSON is accepted too
    report = prepare_dataset("richpediamel", root, tmp_path / "out", tmp_path / "kb")
    assert report.kb.text_field == "desc"
    assert (report.mention_image_folder, report.mention_image_fallback) == ("mention_image", False)
    assert load_kb(tmp_path / "kb").get_record("Q2").description == "desc of Kastrel"
    doc = read_docs(tmp_path / "out" / "train.spacy")[0]
    assert doc.ents[0].label_ == "ORG"
    assert doc._.image == str((root / "mention_image" / "m1.jpg").absolute())


def test_malformed_json_names_file_and_position(dataset_dir: Path, tmp_path: Path):
    (dataset_dir / "WIKIMEL_dev.json").write_text('[\n {"a": 1},\n {"b": }\n]', encoding="utf8")
    with pytest.raises(ValueError, match=r"WIKIMEL_dev\.json at line 3, column 8"):
        prepare_dataset("wikimel", dataset_dir, tmp_path / "out", tmp_path / "kb")


def test_wrong_record_type_names_file(dataset_dir: Path, tmp_path: Path):
    write_json(
        dataset_dir / "WIKIMEL_test.json", [{"mentions": 3, "sentence": "x", "answer": "Q1"}]
    )
    with pytest.raises(DatasetError, match=r"WIKIMEL_test\.json: record 0 has 'mentions'"):
        prepare_dataset("wikimel", dataset_dir, tmp_path / "out", tmp_path / "kb")


@pytest.mark.parametrize(
    "prefixes,expected",
    [
        (["wiki_diverse"], "wiki_diverse_train.json"),
        (["wiki_diverse", "WikiDiverse"], "WikiDiverse_train.json"),
        ([], None),
    ],
)
def test_wikidiverse_file_variants(tmp_path: Path, prefixes: List[str], expected: str):
    root = tmp_path / "wd"
    for prefix in prefixes:
        write_dataset(root, prefix, {"train": TRAIN[:1], "dev": [], "test": []}, KB_RECORDS, QID2ID)
    if expected is None:
        root.mkdir()
        with pytest.raises(DatasetError, match="WikiDiverse_.*wiki_diverse_"):
            prepare_dataset("wikidiverse", root, tmp_path / "out", tmp_path / "kb")
    else:
        report = prepare_dataset("wikidiverse", root, tmp_path / "out", tmp_path / "kb")
        assert report.splits["train"].file == expected


def test_user_errors(tmp_path: Path, dataset_dir: Path):
    with pytest.raises(DatasetError, match="Dataset folder not found"):
        prepare_dataset("wikimel", tmp_path / "missing", tmp_path / "out", tmp_path / "kb")
    with pytest.raises(DatasetError, match="Unknown dataset"):
        prepare_dataset("imagenet", dataset_dir, tmp_path / "out", tmp_path / "kb")
    (dataset_dir / "qid2id.json").unlink()
    with pytest.raises(DatasetError, match="qid2id.json"):
        prepare_dataset("wikimel", dataset_dir, tmp_path / "out", tmp_path / "kb")


@pytest.mark.parametrize(
    "name,unsafe",
    [
        ("x.jpg", False),
        ("sub/x.jpg", False),
        ("../x.jpg", True),
        ("a/../../x.jpg", True),
        ("/etc/passwd", True),
        ("..\\x.jpg", True),
        ("C:\\x.jpg", True),
        ("\\\\host\\x.jpg", True),
        ("x\0.jpg", True),
    ],
)
def test_is_unsafe_name(name: str, unsafe: bool):
    assert is_unsafe_name(name) is unsafe


def test_resolve_mention_image(tmp_path: Path):
    (tmp_path / "a.jpg").write_bytes(JPEG)
    (tmp_path / "b.png").write_bytes(JPEG)
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert resolve_mention_image("dir/a.gif", tmp_path) == ("found", tmp_path / "a.jpg")
    assert resolve_mention_image("b.png", tmp_path) == ("found", tmp_path / "b.png")
    assert resolve_mention_image("empty.jpg", tmp_path) == ("missing", None)
    assert resolve_mention_image("a.jpg", None) == ("missing", None)
    assert resolve_mention_image("  ", tmp_path) == ("empty_path", None)
    assert resolve_mention_image(None, tmp_path) == ("empty_path", None)
    assert resolve_mention_image("../a.jpg", tmp_path) == ("unsafe", None)


def test_find_mention():
    assert find_mention("Velmora", "see Velmora") == (4, 11)
    assert find_mention("velmora", "see VELMORA") == (4, 11)
    assert find_mention("a.b", "aXb a.b") == (4, 7)
    assert find_mention("Kastrel", "nothing") is None
