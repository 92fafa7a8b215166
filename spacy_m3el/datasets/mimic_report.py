"""The report of a dataset preparation: per-split and knowledge-base counts.

Every mention record is either kept or counted under a named reason in a
:class:`SplitReport`; every entity record under one in the :class:`KBReport`.
"""

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Dict, List, Optional


@dataclass
class SplitReport:
    """What happened to the mention records of one split.

    ``records == kept + nil + gold_missing_from_kb + empty_mention + skipped_by_limit``
    and, over the kept docs, ``image_found + image_missing + image_empty_path +
    unsafe_image_path == kept``.
    """

    file: str = ""
    records: int = 0
    kept: int = 0
    nil: int = 0
    gold_missing_from_kb: int = 0
    empty_mention: int = 0
    skipped_by_limit: int = 0
    image_found: int = 0
    image_missing: int = 0
    image_empty_path: int = 0
    unsafe_image_path: int = 0
    mention_not_in_sentence: int = 0
    mention_token_split: int = 0
    gold_missing_examples: List[str] = field(default_factory=list)


SPLIT_COUNT_FIELDS = tuple(f.name for f in fields(SplitReport) if f.type is int)


@dataclass
class KBReport:
    """What happened to the entity records of ``kb_entity.json``."""

    records: int = 0
    entities: int = 0
    entities_without_images: int = 0
    images: int = 0
    kb_images_missing: int = 0
    kb_unsafe_image_paths: int = 0
    duplicate_qids: int = 0
    no_qid: int = 0
    aliases: int = 0
    text_field: str = ""


@dataclass
class PreparationReport:
    """The outcome of :func:`prepare_dataset`: per-split and KB counts."""

    dataset: str
    dataset_dir: str
    output_dir: str
    kb_dir: str
    embed_images: bool = False
    limit: int = 0
    mention_image_folder: Optional[str] = None
    mention_image_fallback: bool = False
    splits: Dict[str, SplitReport] = field(default_factory=dict)
    kb: KBReport = field(default_factory=KBReport)

    def to_dict(self) -> Dict[str, Any]:
        """RETURNS (Dict[str, Any]): A JSON-serializable copy of the report."""
        return asdict(self)

    def format_table(self) -> str:
        """RETURNS (str): A readable multi-line table of the counts."""
        names = list(self.splits)
        width = max(len(name) for name in SPLIT_COUNT_FIELDS)
        lines = [
            f"Dataset {self.dataset} from {self.dataset_dir}",
            f"{'mentions':<{width}}  " + "  ".join(f"{name:>7}" for name in names),
        ]
        for name in SPLIT_COUNT_FIELDS:
            values = [getattr(self.splits[split], name) for split in names]
            lines.append(f"{name:<{width}}  " + "  ".join(f"{value:>7}" for value in values))
        for split in names:
            examples = self.splits[split].gold_missing_examples
            if examples:
                lines.append(
                    f"gold QIDs missing from the KB ({split}, first): {', '.join(examples)}"
                )
        folder = self.mention_image_folder or "(none found)"
        fallback = " (fallback: mention_image/ is missing)" if self.mention_image_fallback else ""
        lines.append(f"mention image folder: {folder}{fallback}")
        lines.append("knowledge base")
        kb = asdict(self.kb)
        kb_width = max(len(name) for name in kb)
        lines.extend(f"  {name:<{kb_width}}  {value}" for name, value in kb.items())
        lines.append(f"docs written to {self.output_dir}, KB written to {self.kb_dir}")
        return "\n".join(lines)
