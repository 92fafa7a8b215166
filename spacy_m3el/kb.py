"""A multimodal knowledge base on top of spaCy's ``InMemoryLookupKB``.

Aliases, prior probabilities and candidate lookup are spaCy's own; this class
adds, per entity, the name, description and images the M3EL model encodes.
"""

import hashlib
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union
from urllib.parse import unquote

import numpy
import srsly
from spacy.kb import Candidate, InMemoryLookupKB
from spacy.tokens import Span
from spacy.util import ensure_path
from spacy.vocab import Vocab

from .aliases import FuzzyAliasIndex
from .images import normalize_image_value

ImageRef = Union[str, bytes, numpy.ndarray]
RECORDS_FILE = "m3el_entities.msgpack"
# The KB ID of a mention that links to no entity (spaCy's EntityLinker.NIL).
NIL = "NIL"


@dataclass(frozen=True)
class EntityRecord:
    """What the model needs to know about one entity.

    kb_id (str): The entity ID, e.g. a Wikidata QID.
    name (str): The entity name.
    description (str): A description or attribute text.
    images (Tuple[ImageRef, ...]): Image paths (absolute, or relative to the KB's
        ``image_root``), encoded image bytes or uint8 arrays (PIL images are
        stored as arrays). May be empty.
    """

    kb_id: str
    name: str
    description: str = ""
    images: Tuple[ImageRef, ...] = field(default_factory=tuple)


def normalize_alias(text: str) -> str:
    """The case- and quoting-insensitive form used for fallback alias lookup."""
    text = unquote(text) if "%" in text else text
    text = unicodedata.normalize("NFKC", text).replace("_", " ")
    return " ".join(text.casefold().split())


def feed_record(
    add: Callable[[bytes, bytes], None],
    record: EntityRecord,
    *,
    with_id: bool = True,
    fold_name: bool = False,
) -> None:
    """Feed what identifies an entity to ``add(tag, data)``, one tagged part at a time.

    with_id (bool): Include the KB ID (False: only what the model sees).
    fold_name (bool): Case-fold the name (the model's tokenizer does not see case).
    """
    name = record.name.strip().lower() if fold_name else record.name
    for part in ((record.kb_id,) if with_id else ()) + (name, record.description):
        add(b"t", part.encode("utf8"))
    add(b"n", len(record.images).to_bytes(8, "little"))
    for ref in record.images:
        if isinstance(ref, numpy.ndarray):
            array = numpy.ascontiguousarray(ref)
            add(b"a", f"{ref.dtype.str}{ref.shape}".encode("utf8") + array.tobytes())
        elif isinstance(ref, bytes):
            add(b"b", ref)
        else:
            add(b"p", ref.encode("utf8"))


def tagged_digest() -> Tuple[Any, Callable[[bytes, bytes], None]]:
    """A sha256 digest and its ``add(tag, data)``: a type tag and a length prefix per part,
    so a path and the same bytes, or text that moves between fields, never hash alike."""
    digest = hashlib.sha256()

    def add(tag: bytes, data: bytes) -> None:
        digest.update(tag + len(data).to_bytes(8, "little") + data)

    return digest, add


class MultimodalKB(InMemoryLookupKB):
    """An ``InMemoryLookupKB`` whose entities carry a name, description and images.

    vocab (Vocab): The shared vocab.
    entity_vector_length (int): Length of spaCy's per-entity vectors. The M3EL
        model does not use them; they are kept for compatibility with spaCy's
        KB API, so the default is 1.
    image_root (Optional[str]): Directory that relative image paths refer to.
    """

    def __init__(
        self, vocab: Vocab, entity_vector_length: int = 1, image_root: Optional[str] = None
    ):
        super().__init__(vocab, entity_vector_length)
        self._records: Dict[str, EntityRecord] = {}
        self._freqs: Dict[str, float] = {}
        self.image_root = image_root
        self._fuzzy_index: Optional[FuzzyAliasIndex] = None
        self._fuzzy_aliases: Dict[str, List[str]] = {}  # normalized -> alias strings
        self._fuzzy_size = -1

    # Entities ---------------------------------------------------------------

    def add_multimodal_entity(
        self,
        kb_id: str,
        name: str,
        description: str = "",
        images: Sequence[ImageRef] = (),
        freq: float = 1.0,
        vector: Optional[Sequence[float]] = None,
    ) -> None:
        """Add an entity with its text and images.

        RAISES (ValueError): If ``kb_id`` is empty or already in the KB.
        """
        if not isinstance(kb_id, str) or not kb_id:
            raise ValueError(f"Entity IDs must be non-empty strings, got {kb_id!r}.")
        if kb_id in self._records or self.contains_entity(kb_id):
            raise ValueError(
                f"Duplicate entity ID {kb_id!r}: every entity may be added only once. "
                "Merge the duplicates before building the KB."
            )
        if vector is None:
            vector = [0.0] * self.entity_vector_length
        self.add_entity(kb_id, float(freq), list(vector))
        self._freqs[kb_id] = float(freq)
        stored = tuple(normalize_image_value(image) for image in images if image is not None)
        self._records[kb_id] = EntityRecord(kb_id, str(name), str(description or ""), stored)

    def get_record(self, kb_id: str) -> EntityRecord:
        """Return the record of an entity. RAISES (KeyError) if unknown."""
        try:
            return self._records[kb_id]
        except KeyError:
            raise KeyError(f"Entity {kb_id!r} is not in the knowledge base.") from None

    def has_record(self, kb_id: str) -> bool:
        return kb_id in self._records

    @property
    def entity_ids(self) -> List[str]:
        """Entity IDs in insertion order (the order of exhaustive rankings)."""
        return list(self._records)

    def records(self) -> Iterator[EntityRecord]:
        return iter(self._records.values())

    def resolve_image(self, ref: ImageRef) -> ImageRef:
        """Turn a relative image path into one that can be opened."""
        if isinstance(ref, str) and self.image_root and not Path(ref).is_absolute():
            return str(Path(self.image_root) / ref)
        return ref

    def fingerprint(self) -> str:
        """A hash of every entity's ID, text and images; changes when the KB does."""
        digest, add = tagged_digest()
        for record in self._records.values():
            feed_record(add, record)
        add(b"r", b"" if self.image_root is None else b"\1" + str(self.image_root).encode("utf8"))
        return digest.hexdigest()

    # Aliases ----------------------------------------------------------------

    def add_name_aliases(self, extra_aliases: Optional[Dict[str, Iterable[str]]] = None) -> int:
        """Add every entity name (and its normalized form) as an alias.

        Priors are the entities' frequencies, normalized over the entities
        that share an alias.

        extra_aliases (Optional[Dict[str, Iterable[str]]]): More aliases per entity ID.
        RETURNS (int): The number of aliases added.
        """
        table: Dict[str, Dict[str, float]] = {}
        for record in self._records.values():
            names = [record.name] + list((extra_aliases or {}).get(record.kb_id, ()))
            for name in names:
                for alias in {name, normalize_alias(name)}:
                    if alias:
                        table.setdefault(alias, {})[record.kb_id] = 1.0
        added = 0
        for alias, entities in table.items():
            if self.contains_alias(alias):
                continue
            ids = sorted(entities)
            weights = [max(self._entity_freq(kb_id), 1e-6) for kb_id in ids]
            total = sum(weights)
            self.add_alias(alias, ids, [w / total * 0.999999 for w in weights])
            added += 1
        return added

    def _entity_freq(self, kb_id: str) -> float:
        # InMemoryLookupKB exposes frequencies only through candidates; keep our own.
        return self._freqs.get(kb_id, 1.0)

    def candidates_for(self, text: str, fuzzy: bool = False) -> List[Candidate]:
        """Alias candidates for a mention text: exact match, then normalized match.

        fuzzy (bool): If neither matches, the candidates of the aliases within one
            edit of the normalized text (see :mod:`spacy_m3el.aliases`); their
            ``alias_`` tells them from exact matches.
        """
        found = self.get_alias_candidates(text)
        if found:
            return list(found)
        normalized = normalize_alias(text)
        if normalized and normalized != text:
            found = self.get_alias_candidates(normalized)
        if not found and fuzzy:
            return self._fuzzy_candidates(normalized)
        return list(found)

    def _fuzzy_candidates(self, normalized: str) -> List[Candidate]:
        # The index is built on first use and rebuilt when aliases were added.
        if self._fuzzy_index is None or self._fuzzy_size != self.get_size_aliases():
            self._fuzzy_aliases = {}
            for alias in self.get_alias_strings():
                self._fuzzy_aliases.setdefault(normalize_alias(alias), []).append(alias)
            self._fuzzy_index = FuzzyAliasIndex(self._fuzzy_aliases)
            self._fuzzy_size = self.get_size_aliases()
        seen, found = set(), []
        for key in self._fuzzy_index.lookup(normalized):
            for alias in self._fuzzy_aliases[key]:
                for candidate in self.get_alias_candidates(alias):
                    if candidate.entity_ not in seen:
                        seen.add(candidate.entity_)
                        found.append(candidate)
        return found

    # Serialization ----------------------------------------------------------

    def _records_msg(self) -> dict:
        return {
            "version": 1,
            "image_root": self.image_root,
            "records": [
                [r.kb_id, r.name, r.description, list(r.images), self._entity_freq(r.kb_id)]
                for r in self._records.values()
            ],
        }

    @staticmethod
    def _check_records_msg(msg: Any, source: str) -> dict:
        """Validate the structure of a records message; ValueError naming ``source``."""
        problem = None
        if not isinstance(msg, dict):
            problem = f"expected a mapping, got {type(msg).__name__}"
        elif msg.get("version") != 1:
            problem = f"unsupported multimodal KB version {msg.get('version')!r} (expected 1)"
        elif not isinstance(msg.get("records"), (list, tuple)):
            problem = "the 'records' list is missing"
        else:
            for i, row in enumerate(msg["records"]):
                if not (
                    isinstance(row, (list, tuple))
                    and len(row) == 5
                    and isinstance(row[0], str)
                    and row[0]
                ):
                    problem = (
                        f"record {i} is malformed "
                        "(expected [kb_id, name, description, images, freq])"
                    )
                    break
        if problem is not None:
            raise ValueError(
                f"Corrupt multimodal KB records in {source}: {problem}. Rebuild the KB."
            )
        return msg

    def _load_records_msg(self, msg: dict) -> None:
        self.image_root = msg.get("image_root")
        self._records = {}
        self._freqs = {}
        for kb_id, name, description, images, freq in msg["records"]:
            self._records[kb_id] = EntityRecord(kb_id, name, description, tuple(images))
            self._freqs[kb_id] = freq
        missing = [kb_id for kb_id in self._records if not self.contains_entity(kb_id)]
        if missing:
            raise ValueError(
                f"Corrupt multimodal KB: {len(missing)} entities have records but are not "
                f"in the alias table (first: {missing[0]!r}). Rebuild the KB."
            )

    def to_disk(self, path: Union[str, Path], exclude: Iterable[str] = tuple()) -> None:
        path = ensure_path(path)
        super().to_disk(path, exclude=exclude)
        srsly.write_msgpack(path / RECORDS_FILE, self._records_msg())

    def from_disk(self, path: Union[str, Path], exclude: Iterable[str] = tuple()) -> "MultimodalKB":
        """Load a KB saved by :meth:`to_disk`. RETURNS (MultimodalKB): self.

        RAISES (ValueError): If the folder has no records file (for example a
            plain spaCy ``InMemoryLookupKB`` folder) or the file is corrupt.
        """
        path = ensure_path(path)
        records_path = path / RECORDS_FILE
        if not records_path.exists():
            raise ValueError(
                f"{path} is not a multimodal KB folder: {RECORDS_FILE} is missing. Build "
                "it with spacy_m3el (for example 'python -m spacy_m3el prepare ...')."
            )
        try:
            msg = srsly.read_msgpack(records_path)
        except Exception as err:
            raise ValueError(
                f"Could not read the multimodal KB records file {records_path}: it is corrupt or "
                f"not a spacy_m3el file ({type(err).__name__}: {err}). Rebuild the KB."
            ) from err
        msg = self._check_records_msg(msg, str(records_path))
        super().from_disk(path, exclude=exclude)
        self._load_records_msg(msg)
        return self

    def to_bytes(self, **kwargs) -> bytes:
        # spaCy's KB bytes hold only string hashes; keep the strings (as to_disk
        # does with strings.json) so the bytes load into any vocab.
        strings = sorted(set(self.get_entity_strings()) | set(self.get_alias_strings()))
        return srsly.msgpack_dumps(
            {"lookup": super().to_bytes(**kwargs), "m3el": self._records_msg(), "strings": strings}
        )

    def from_bytes(self, bytes_data: bytes, *, exclude: Tuple[str] = tuple()) -> "MultimodalKB":
        """Load a KB serialized by :meth:`to_bytes`. RETURNS (MultimodalKB): self."""
        try:
            msg = srsly.msgpack_loads(bytes_data)
        except Exception as err:
            raise ValueError(
                f"Could not read multimodal KB bytes: they are corrupt or not from "
                f"MultimodalKB.to_bytes ({type(err).__name__}: {err})."
            ) from err
        if not isinstance(msg, dict) or "lookup" not in msg or "m3el" not in msg:
            raise ValueError(
                "Could not read multimodal KB bytes: not from MultimodalKB.to_bytes "
                "(keys 'lookup' and 'm3el' missing)."
            )
        records = self._check_records_msg(msg["m3el"], "the serialized bytes")
        for string in msg.get("strings", ()):
            self.vocab.strings.add(string)
        super().from_bytes(msg["lookup"], exclude=exclude)
        self._load_records_msg(records)
        return self


def empty_kb(vocab: Vocab, entity_vector_length: int = 1) -> MultimodalKB:
    return MultimodalKB(vocab, entity_vector_length)


def kb_from_file(kb_path: Optional[Union[str, Path]]) -> Callable[[Vocab], MultimodalKB]:
    """Return a loader that reads a saved :class:`MultimodalKB` into a vocab."""

    def load(vocab: Vocab) -> MultimodalKB:
        if kb_path is None:
            raise ValueError(
                "No knowledge base path given: set paths.kb (for example --paths.kb corpus/kb)."
            )
        path = ensure_path(kb_path)
        if not path.exists():
            raise ValueError(f"Knowledge base folder not found: {path}")
        kb = MultimodalKB(vocab)
        kb.from_disk(path)
        return kb

    return load


def get_alias_candidates(kb: MultimodalKB, mention: Span) -> List[Candidate]:
    """spaCy-style ``get_candidates``: exact alias, then normalized alias."""
    if isinstance(kb, MultimodalKB):
        return kb.candidates_for(mention.text)
    return list(kb.get_candidates(mention))


def get_alias_candidates_batch(kb: MultimodalKB, mentions: Iterable[Span]) -> List[List[Candidate]]:
    return [get_alias_candidates(kb, mention) for mention in mentions]


def fuzzy_alias_candidates_batch(
    kb: MultimodalKB, mentions: Iterable[Span]
) -> List[List[Candidate]]:
    """Exact, then normalized, then within-one-edit alias candidates of each mention."""
    if not isinstance(kb, MultimodalKB):
        return [list(kb.get_candidates(mention)) for mention in mentions]
    return [kb.candidates_for(mention.text, fuzzy=True) for mention in mentions]
