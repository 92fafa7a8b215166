"""Which matching units link which mentions: per-unit Hits@1, seen and zero-shot.

Run from the repository root:
      python -m bench.units CORPUS PIPELINE [PIPELINE ...] [--split test]

CORPUS is a prepared corpus folder (``train.spacy`` and the split to score). Every
mention of the split is ranked among all KB entities by the overall score and by
each enabled unit's score alone (float32 entity features), and Hits@1 is split by
whether the gold entity has training mentions (seen) or not (zero-shot). A unit
that is strong on seen entities and near zero on zero-shot ones has learned the
training entities rather than how to match.
"""

import argparse
from pathlib import Path
from typing import Dict, List, Optional

import numpy

ALL = "score"


def unit_hits(nlp, split: Path, seen_in: Path, batch_size: int = 16) -> Dict[str, Dict]:
    """Per column (the overall ``score``, then each enabled unit): Hits@1 on all, seen
    and zero-shot mentions (None where there are none), plus the mention counts."""
    from spacy_m3el.evaluation import find_linker, gold_mentions, training_entities
    from spacy_m3el.readers import read_examples
    from spacy_m3el.scoring import rank_of_gold

    linker = find_linker(nlp)
    examples = read_examples(nlp, split, image_attr=linker.image_attr)
    spans, gold_ids, _ = gold_mentions(examples, linker)
    seen_ids = training_entities(nlp, seen_in)
    cache = linker.exact_entity_cache()
    entities = cache.side_rows(None)
    columns = [ALL] + list(linker.model.net.units.enabled)
    hits: Dict[str, List[bool]] = {column: [] for column in columns}
    for start in range(0, len(spans), batch_size):
        batch = spans[start : start + batch_size]
        images, _ = linker.load_images([span.doc for span in batch])
        mentions = linker.encode_mentions(batch, images)
        overall, by_unit = linker.model.unit_scores(mentions, entities, None)
        for i, gold in enumerate(gold_ids[start : start + batch_size]):
            row = cache.rows[gold]
            hits[ALL].append(rank_of_gold(overall[i], row) == 1)
            for k, unit in enumerate(columns[1:]):
                hits[unit].append(rank_of_gold(by_unit[i, :, k], row) == 1)
    linker.index.forget_exact()
    seen = numpy.array([gold in seen_ids for gold in gold_ids], dtype=bool)
    return {
        column: {
            "all": _share(values, numpy.ones_like(seen)),
            "seen": _share(values, seen),
            "zero-shot": _share(values, ~seen),
            "n_seen": int(seen.sum()),
            "n_zero_shot": int((~seen).sum()),
        }
        for column, values in hits.items()
    }


def _share(values: List[bool], chosen: numpy.ndarray) -> Optional[float]:
    picked = numpy.asarray(values, dtype=bool)[chosen]
    return float(picked.mean()) if len(picked) else None


def _cell(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def main(argv: Optional[List[str]] = None) -> Dict[str, Dict]:
    """Print, per pipeline, a table of Hits@1 by column and by seen / zero-shot gold."""
    import spacy

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path, help="prepared corpus folder (train.spacy, ...)")
    parser.add_argument("pipelines", type=Path, nargs="+", help="trained pipeline folders")
    parser.add_argument("--split", default="test", help="the split to score (default test)")
    args = parser.parse_args(argv)
    split, seen_in = args.corpus / f"{args.split}.spacy", args.corpus / "train.spacy"
    results = {str(p): unit_hits(spacy.load(p), split, seen_in) for p in args.pipelines}
    for path, table in results.items():
        counts = table[ALL]
        print(f"\n{path} ({counts['n_seen']} seen, {counts['n_zero_shot']} zero-shot mentions)")
        print("| ranked by | Hits@1 | seen | zero-shot |\n|---|---|---|---|")
        for column, row in table.items():
            cells = [_cell(row[key]) for key in ("all", "seen", "zero-shot")]
            print(f"| {column} | " + " | ".join(cells) + " |")
    return results


if __name__ == "__main__":
    main()
