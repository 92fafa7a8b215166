"""Saving and loading the linker: its parts, and errors that say which part is damaged."""

from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Union

import srsly
from spacy import util
from spacy.vocab import Vocab

from ..kb import MultimodalKB
from .decision import LinkDecision
from .entity_index import CACHE_FILE

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


class LinkerSerialization:
    """``to_bytes``/``from_bytes``/``to_disk``/``from_disk`` of the ``m3el_linker``.

    The folder holds ``cfg`` (settings, the fitted linking decision), ``kb``,
    ``model`` and, when it is current, the entity cache.
    """

    def to_bytes(self, *, exclude: Iterable[str] = tuple()) -> bytes:
        self._validate_serialization_attrs()
        serialize = {
            "cfg": lambda: srsly.json_dumps(self.cfg),
            "kb": self.kb.to_bytes,
            "model": self.model.to_bytes,
        }
        if "vocab" not in exclude:
            serialize["vocab"] = lambda: self.vocab.to_bytes(exclude=exclude)
        return util.to_bytes(serialize, exclude)

    def from_bytes(
        self, bytes_data: bytes, *, exclude: Iterable[str] = tuple()
    ) -> "LinkerSerialization":
        self._validate_serialization_attrs()
        deserialize = {
            "cfg": lambda b: self._load_cfg(lambda: srsly.json_loads(b)),
            "kb": lambda b: self._load_kb(lambda kb: kb.from_bytes(b)),
            "model": lambda b: self._load_model(lambda: self.model.from_bytes(b)),
        }
        if "vocab" not in exclude:
            deserialize["vocab"] = lambda b: self.vocab.from_bytes(b, exclude=exclude)
        util.from_bytes(bytes_data, deserialize, exclude)
        return self

    def to_disk(self, path: Union[str, Path], *, exclude: Iterable[str] = tuple()) -> None:
        serialize = {
            "cfg": lambda p: srsly.write_json(p, self.cfg),
            "kb": lambda p: self.kb.to_disk(p),
            "model": lambda p: self.model.to_disk(p),
            CACHE_FILE: self._save_cache,
        }
        if "vocab" not in exclude:
            serialize["vocab"] = lambda p: self.vocab.to_disk(p, exclude=exclude)
        util.to_disk(path, serialize, exclude)

    def _save_cache(self, path: Path) -> None:
        if self.save_entity_cache:
            self.index.save(path, self.kb)

    def from_disk(
        self, path: Union[str, Path], *, exclude: Iterable[str] = tuple()
    ) -> "LinkerSerialization":
        path = util.ensure_path(path)
        check_folder(self.name, path, exclude)
        deserialize = {
            "cfg": lambda p: self._load_cfg(lambda: srsly.read_json(p)),
            "kb": lambda p: self._load_kb(lambda kb: kb.from_disk(p)),
            "model": lambda p: self._load_model(lambda: self.model.from_bytes(p.read_bytes())),
            CACHE_FILE: self.index.load,
        }
        if "vocab" not in exclude:
            deserialize["vocab"] = lambda p: self.vocab.from_disk(p, exclude=exclude)
        util.from_disk(path, deserialize, exclude)
        return self

    def _load_kb(self, fill: Callable[[MultimodalKB], Any]) -> None:
        self.kb = load_kb(self.name, self.generate_empty_kb, self.vocab, fill)

    def _load_cfg(self, read: Callable[[], Dict[str, Any]]) -> None:
        cfg = read_cfg(self.name, read)
        if "decision" in cfg:
            try:
                LinkDecision.from_dict(cfg["decision"])
            except ValueError as err:
                raise ValueError(f"{self.name}: the settings file 'cfg' is corrupt: {err}") from err
        self.cfg.update(cfg)

    def _load_model(self, load: Callable[[], Any]) -> None:
        load_weights(self.name, load)
        self.index.model_changed()
