"""Train and evaluate one variant with one seed, by ``spacy train`` and the papers' protocol.

Each run lives in its own folder under the work folder, keyed by its
overrides and seed; a finished run (``metrics.json`` present) is read back
instead of trained again, so an interrupted experiment resumes, and two rows
with the same settings (the full model in the ablations and at 100% of the
training data) are trained once.
"""

import functools
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

import srsly

from .suites import Variant

METRICS_FILE = "metrics.json"
KEPT_METRICS = ("mrr", "hits@1", "hits@3", "hits@5", "hits@10", "hits@20", "mean_rank")


@dataclass(frozen=True)
class ExperimentData:
    """What every run is trained and evaluated on.

    config (Path): The training config (e.g. ``configs/demo.cfg``).
    train, dev, test (Path): The ``.spacy`` splits.
    kb (Path): The knowledge base folder.
    encoder (str): The CLIP checkpoint (local folder or hub name).
    max_steps (int): Shorten training to this many steps (0: the config's own).
    """

    config: Path
    train: Path
    dev: Path
    test: Path
    kb: Path
    encoder: str
    max_steps: int = 0

    def overrides(self, seed: int) -> Dict[str, Any]:
        settings: Dict[str, Any] = {
            "paths.train": str(self.train),
            "paths.dev": str(self.dev),
            "paths.kb": str(self.kb),
            "paths.encoder": str(self.encoder),
            "system.seed": seed,
        }
        if self.max_steps:
            settings.update(
                {
                    "training.max_steps": self.max_steps,
                    "training.max_epochs": 0,
                    "training.eval_frequency": max(1, self.max_steps // 2),
                    "training.patience": 0,
                }
            )
        return settings


def run_key(data: ExperimentData, variant: Variant, seed: int) -> str:
    """A short hash of everything that decides a run's result: the config, the data's
    contents (regenerated data at the same paths is new data), the overrides and the seed."""
    settings = {
        "config": Path(data.config).read_text(encoding="utf8"),
        "data": {k: str(v) for k, v in data.overrides(seed).items()},
        "test": str(data.test),
        "contents": data_digest([data.train, data.dev, data.test, data.kb]),
        "variant": variant.overrides,
    }
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf8")).hexdigest()[:12]


def data_digest(paths) -> str:
    """A hash of the bytes of these files (folders: every file below them, by name)."""
    digest = hashlib.sha256()
    for path in map(Path, paths):
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
            stat = file.stat()
            digest.update(_file_digest(str(file), stat.st_size, stat.st_mtime_ns).encode())
    return digest.hexdigest()


@functools.lru_cache(maxsize=256)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    """A file's hash, read once per version (size and mtime): every run of an
    experiment keys on the same data files."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def schedule_overrides(data: ExperimentData, variant: Variant) -> Dict[str, Any]:
    """A low-resource row validates per epoch of its own subset: an epoch-based config's
    ``eval_frequency`` and ``patience`` scaled by the training fraction (full-length runs)."""
    fraction = variant.overrides.get("corpora.train.fraction")
    if data.max_steps or not fraction or fraction >= 1:
        return {}
    from thinc.api import Config

    training = Config().from_disk(data.config, interpolate=False)["training"]
    if not training.get("max_epochs"):
        return {}  # trains by steps: its length does not depend on the data
    return {
        "training.eval_frequency": max(1, round(training["eval_frequency"] * fraction)),
        "training.patience": round(training["patience"] * fraction),
    }


def run_variant(
    data: ExperimentData, variant: Variant, seed: int, work: Path, *, log: Optional[Path] = None
) -> Dict[str, Any]:
    """Train ``variant`` with ``seed`` (unless already done) and evaluate it on dev and test.

    RETURNS (Dict[str, Any]): ``variant``, ``seed``, ``dev`` and ``test`` (full-KB
        ranking metrics of the best checkpoint, float32 entity features), the
        test ``by_gold_image`` and ``by_training`` (seen / zero-shot) splits and ``folder``.
    """
    folder = Path(work) / f"run-{run_key(data, variant, seed)}"
    done = folder / METRICS_FILE
    if done.exists():
        measured = srsly.read_json(done)
    else:
        started = time.perf_counter()
        train_pipeline(data, variant, seed, folder / "training", log=log)
        train_seconds = time.perf_counter() - started
        measured = evaluate_run(data, folder / "training" / "model-best")
        measured["train_seconds"] = round(train_seconds, 1)
        measured["folder"] = str(folder)
        srsly.write_json(done, measured)
    return {
        **measured,
        "variant": variant.name,
        "suite": variant.suite,
        "seed": seed,
        "train_fraction": variant.train_fraction,
    }


def train_pipeline(
    data: ExperimentData, variant: Variant, seed: int, output: Path, log: Optional[Path] = None
) -> None:
    """``spacy train`` of the config with the data's and the variant's overrides."""
    import contextlib

    from spacy.cli.train import train

    overrides = {**data.overrides(seed), **variant.overrides, **schedule_overrides(data, variant)}
    output.mkdir(parents=True, exist_ok=True)
    with open(log or output / "train.log", "a", encoding="utf8") as stream:
        with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
            train(data.config, output, use_gpu=-1, overrides=overrides)


def evaluate_run(data: ExperimentData, model: Path) -> Dict[str, Any]:
    """The papers' protocol on dev and test for a trained pipeline."""
    import spacy

    from ..evaluation import evaluate_pipeline, find_linker, training_entities
    from ..readers import read_examples

    nlp = spacy.load(model)
    linker = find_linker(nlp)
    seen = training_entities(nlp, data.train)
    result: Dict[str, Any] = {}
    for split, path in (("dev", data.dev), ("test", data.test)):
        examples = read_examples(nlp, path, image_attr=linker.image_attr)
        metrics = evaluate_pipeline(nlp, examples, candidates=False, seen=seen)
        result[split] = {key: metrics[key] for key in KEPT_METRICS}
        result[split]["n_mentions"] = metrics["n_mentions"]
        if split == "test":
            result["by_gold_image"] = metrics["by_gold_image"]
            result["by_training"] = metrics["by_training"]
    return result
