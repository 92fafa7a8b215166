"""Shipped configs trained and evaluated in their own processes (for the benchmarks that
compare configs: ``bench.text_tower``, ``bench.pretrained``)."""

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, Optional

from .common import ROOT


def run_module(*args: str, log: Optional[Path] = None) -> None:
    """``python -m <args>`` from the repository root; with ``log``, its output goes there."""
    if log is None:
        subprocess.run([sys.executable, "-m", *args], check=True, cwd=ROOT)
        return
    with open(log, "w", encoding="utf8") as out:
        subprocess.run([sys.executable, "-m", *args], check=True, cwd=ROOT, stdout=out, stderr=out)


def train_config(config: str, output: Path, overrides: Dict[str, object]) -> float:
    """``spacy train configs/<config>`` with config overrides (its log in
    ``output/train.log``); a rerun with the same output reuses the run.
    RETURNS (float): The wall-clock minutes."""
    args = [
        f"--{key}={json.dumps(v) if isinstance(v, bool) else v}" for key, v in overrides.items()
    ]
    record = output / "train-minutes.txt"
    if not record.exists():
        output.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        command = ("spacy", "train", str(ROOT / "configs" / config), "--output", str(output))
        run_module(*command, *args, log=output / "train.log")
        record.write_text(f"{(time.perf_counter() - start) / 60:.3f}\n")
    return float(record.read_text())


def evaluate_split(model: Path, corpus: Path) -> Dict[str, object]:
    """Full-KB ranking of the test mentions (the papers' protocol), split by whether the
    gold was seen in training; raw-text NER and linking when the pipeline has an NER."""
    import spacy
    from spacy.tokens import DocBin

    from spacy_m3el.evaluation import (
        evaluate_pipeline,
        find_linker,
        gold_mentions,
        rank_all_entities,
    )
    from spacy_m3el.readers import read_examples

    nlp = spacy.load(model)
    linker = find_linker(nlp)
    examples = read_examples(nlp, corpus / "test.spacy", image_attr=linker.image_attr)
    metrics = evaluate_pipeline(nlp, examples, candidates=False)
    seen = {
        ent.kb_id_
        for doc in DocBin().from_disk(corpus / "train.spacy").get_docs(nlp.vocab)
        for ent in doc.ents
    }
    spans, gold_ids, _ = gold_mentions(examples, linker)
    ranks = rank_all_entities(linker, spans, gold_ids).ranks
    for name, keep in (("seen", True), ("zero_shot", False)):
        subset = [rank for rank, gold in zip(ranks, gold_ids) if (gold in seen) == keep]
        metrics[f"hits@1_{name}"] = sum(r == 1 for r in subset) / len(subset) if subset else None
        metrics[f"n_{name}"] = len(subset)
    return metrics
