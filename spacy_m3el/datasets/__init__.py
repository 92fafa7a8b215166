"""Dataset preparation: MIMIC-format MEL datasets and the synthetic demo."""

from .demo import generate_demo_dataset, make_demo_corpus_texts
from .mimic import (
    DATASET_PREFIXES,
    DatasetError,
    KBReport,
    PreparationReport,
    SplitReport,
    prepare_dataset,
)

__all__ = [
    "DATASET_PREFIXES",
    "DatasetError",
    "KBReport",
    "PreparationReport",
    "SplitReport",
    "generate_demo_dataset",
    "make_demo_corpus_texts",
    "prepare_dataset",
]
