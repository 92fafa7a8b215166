"""Which gold KB IDs a linker can learn from or be scored on: one rule for every caller."""

from typing import Iterable, Tuple

from spacy.tokens import Span
from spacy.training import Example

from ..kb import NIL, MultimodalKB

# Why a gold entity mention is not used.
GOLD_OK = "ok"
GOLD_NIL = "nil"  # no KB ID, or NIL
GOLD_DISCARDED = "discarded"  # its NER label is in labels_discard
GOLD_NOT_IN_KB = "gold_not_in_kb"


def gold_status(
    kb: MultimodalKB, kb_id: str, label: str = "", labels_discard: Iterable[str] = ()
) -> str:
    """Classify one gold mention: ``GOLD_OK`` or the reason it is not used.

    kb (MultimodalKB): The knowledge base.
    kb_id (str): The mention's gold KB ID ("" for none).
    label (str): Its NER label.
    labels_discard (Iterable[str]): Labels that are never linked.
    RETURNS (str): ``GOLD_OK``, ``GOLD_NIL``, ``GOLD_DISCARDED`` or ``GOLD_NOT_IN_KB``.
    """
    if not kb_id or kb_id == NIL:
        return GOLD_NIL
    if label in labels_discard:
        return GOLD_DISCARDED
    if not kb.contains_entity(kb_id):
        return GOLD_NOT_IN_KB
    return GOLD_OK


def missing_gold_message(component: str, ent: Span, kb_id: str) -> str:
    """The error for a gold KB ID that is not in the KB, saying how to fix it."""
    return (
        f"{component}: the gold KB ID {kb_id!r} of the entity {ent.text!r} in the "
        f"example {ent.doc.text[:60]!r} is not in the knowledge base. Add the entity "
        "to the KB, or set ignore_missing_gold = true to skip such mentions (they are "
        "counted in the component's skipped_missing_gold)."
    )


def reference_gold(
    kb: MultimodalKB, ents: Iterable[Span], labels_discard: Iterable[str] = ()
) -> Iterable[Tuple[Span, str, str]]:
    """``(span, kb_id, status)`` for each gold entity span that carries its own KB ID."""
    labels_discard = tuple(labels_discard)
    for ent in ents:
        yield ent, ent.kb_id_, gold_status(kb, ent.kb_id_, ent.label_, labels_discard)


def check_gold_sample(kb: MultimodalKB, examples: Iterable[Example], component: str) -> None:
    """Raise the missing-gold error for the first gold KB ID of the examples not in the KB."""
    for eg in examples:
        for ent, kb_id, status in reference_gold(kb, eg.reference.ents):
            if status == GOLD_NOT_IN_KB:
                raise ValueError(missing_gold_message(component, ent, kb_id))
