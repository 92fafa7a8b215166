"""Reading a saved linker's parts, with errors that say which part is damaged."""

from pathlib import Path
from typing import Any, Callable, Dict, Iterable

from spacy.vocab import Vocab

from ..kb import MultimodalKB

REQUIRED_PARTS = ("cfg", "kb", "model")


def check_folder(component: str, path: Path, exclude: Iterable[str]) -> None:
    """Raise a ValueError if a part of a saved linker is missing from its folder."""
    for name in REQUIRED_PARTS:
        if name not in exclude and not (path / name).exists():
            raise ValueError(
                f"{component}: the pipeline folder {path} has no '{name}'. The pipeline "
                "was not saved completely; save it again with nlp.to_disk()."
            )


def load_kb(
    component: str,
    generate_empty_kb: Callable[[Vocab, int], MultimodalKB],
    vocab: Vocab,
    fill: Callable[[MultimodalKB], Any],
) -> MultimodalKB:
    """A new KB filled by ``fill`` (from bytes or disk); a ValueError if it is corrupt."""
    kb = generate_empty_kb(vocab, 1)
    try:
        fill(kb)
    except Exception as err:  # spaCy's KB reader fails in many ways on corrupt files
        raise ValueError(
            f"{component}: the knowledge base is corrupt and cannot be loaded "
            f"({type(err).__name__}: {err})."
        ) from err
    return kb


def read_cfg(component: str, read: Callable[[], Dict[str, Any]]) -> Dict[str, Any]:
    """The component settings read by ``read``; a ValueError if they are corrupt."""
    try:
        return read()
    except ValueError as err:
        raise ValueError(
            f"{component}: the component settings file 'cfg' is corrupt ({err})."
        ) from err


def load_weights(component: str, load: Callable[[], Any]) -> None:
    """Run ``load`` (the model's from_bytes); any failure becomes a ValueError naming the part."""
    try:
        load()
    except Exception as err:
        raise ValueError(
            f"{component}: the model weights cannot be loaded ({type(err).__name__}: {err})."
        ) from err
