"""A training config made concrete for a dataset: validation once per epoch (or every N).

spaCy counts ``eval_frequency`` and ``patience`` in steps; the papers validate
once per epoch, and an epoch's length in steps depends on the dataset. For a
config that trains by epochs (``[training] max_epochs > 0``), :func:`per_epoch_config`
sets both from the number of training documents and the batch size; a config
that trains by steps (the demo's ``max_steps``) is returned unchanged.
"""

import math
from pathlib import Path
from typing import Tuple, Union

from thinc.api import Config

SEQUENCE_BATCHER = "spacy.batch_by_sequence.v1"
PREFETCH_BATCHER = "spacy_m3el.PrefetchBatcher.v1"


def count_docs(path: Union[str, Path]) -> int:
    """The number of documents in a ``.spacy`` file (or a folder of them)."""
    from spacy.tokens import DocBin

    path = Path(path)
    files = sorted(path.glob("**/*.spacy")) if path.is_dir() else [path]
    if not files or not all(f.exists() for f in files):
        raise FileNotFoundError(f"No .spacy training data at {path}: run the prepare step first.")
    return sum(len(DocBin().from_disk(f)) for f in files)


def steps_per_epoch(config: Config, n_docs: int) -> int:
    """Updates per epoch: documents over the batcher's size (``batch_by_sequence`` only,
    or wrapped in ``spacy_m3el.PrefetchBatcher.v1``)."""
    batcher = config["training"]["batcher"]
    if batcher.get("@batchers") == PREFETCH_BATCHER:
        batcher = batcher["batcher"]
    if batcher.get("@batchers") != SEQUENCE_BATCHER or not isinstance(batcher.get("size"), int):
        raise ValueError(
            f"Validating per epoch needs [training.batcher] = {SEQUENCE_BATCHER} with an integer "
            f"size (found {batcher.get('@batchers')!r}); set training.eval_frequency in steps "
            "instead, or pass --epochs-per-eval 0."
        )
    return max(1, math.ceil(n_docs / batcher["size"]))


def per_epoch_config(
    config_path: Union[str, Path],
    train_path: Union[str, Path],
    epochs_per_eval: float = 1.0,
    patience_evals: int = 3,
) -> Tuple[Config, str]:
    """The config with ``eval_frequency`` = ``epochs_per_eval`` epochs and ``patience`` =
    ``patience_evals`` validations, for an epoch-based config; unchanged otherwise.

    RETURNS (Tuple[Config, str]): The config (not interpolated) and a line saying what was set.
    """
    config = Config().from_disk(config_path, interpolate=False)
    training = config["training"]
    if epochs_per_eval <= 0 or not training.get("max_epochs"):
        return config, "eval_frequency and patience as in the config (it trains by steps)"
    n_docs = count_docs(train_path)
    per_epoch = steps_per_epoch(config, n_docs)
    frequency = max(1, round(per_epoch * epochs_per_eval))
    training["eval_frequency"] = frequency
    training["patience"] = frequency * patience_evals if patience_evals > 0 else 0
    return config, (
        f"{n_docs} training documents, {per_epoch} steps per epoch: eval_frequency {frequency}, "
        f"patience {training['patience']} steps ({patience_evals} validations)"
    )
