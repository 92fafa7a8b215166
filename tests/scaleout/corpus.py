"""A small caption corpus in the link-corpus input format, and a pipeline to link it."""

import base64
import json
from pathlib import Path
from typing import Dict, List

from ..util import ENTITIES, SENTENCE, color_image, png_bytes, trained_pipeline


def save_corpus_pipeline(tiny_clip: str, path: Path) -> Path:
    """A trained linker behind an entity ruler (the "NER" of records without entities),
    saved with its entity cache."""
    nlp = trained_pipeline(tiny_clip, steps=10)
    ruler = nlp.add_pipe("entity_ruler", before="m3el_linker")
    ruler.add_patterns([{"label": "ENT", "pattern": name} for name in {e[1] for e in ENTITIES}])
    assert len(nlp.get_pipe("m3el_linker").entity_cache) == len(ENTITIES)
    nlp.to_disk(path)
    return path


def caption_records(count: int, image_dir: Path) -> List[Dict]:
    """Records cycling through the entities: a third with an image file, a third with
    base64 image bytes, a third without image; every other one with its entity given."""
    image_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(count):
        kb_id, name, _, color = ENTITIES[i % len(ENTITIES)]
        record: Dict = {"id": f"doc{i}", "text": SENTENCE.format(name=name)}
        if i % 3 == 0:
            image = image_dir / f"{kb_id}.png"
            if not image.exists():
                image.write_bytes(png_bytes(color_image(color, noise=20)))
            record["image"] = f"{image_dir.name}/{image.name}"
        elif i % 3 == 1:
            record["image_base64"] = base64.b64encode(png_bytes(color_image(color))).decode()
        if i % 2 == 0:
            record["entities"] = [{"start": 0, "end": len(name), "label": "ENT"}]
        records.append(record)
    return records


def write_jsonl(path: Path, records: List, extra_lines: List[str] = ()) -> Path:
    lines = [json.dumps(r) for r in records] + list(extra_lines)
    path.write_text("\n".join(lines) + "\n", encoding="utf8")
    return path


def without_scores(rows: List[Dict]) -> List[Dict]:
    """Rows with scores dropped (for engines whose float arithmetic may differ in the
    last bits: other thread counts)."""
    return [
        {
            **{k: v for k, v in row.items() if k != "score"},
            "candidates": [c["kb_id"] for c in row["candidates"]],
        }
        for row in rows
    ]


def assert_close_links(actual: List[Dict], expected: List[Dict]) -> None:
    """The same rows and ranked candidates, scores equal to 1e-6."""
    import pytest

    assert without_scores(actual) == without_scores(expected)
    flat = [c["score"] for row in actual for c in row["candidates"]]
    assert flat == pytest.approx(
        [c["score"] for row in expected for c in row["candidates"]], abs=1e-6
    )
