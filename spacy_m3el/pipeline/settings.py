"""Checks of the linker's settings, with messages that say what to change."""

import inspect
from typing import Any, Dict, Optional

from spacy.errors import Errors

from .entity_cache import check_precision


def check_settings(
    name: str,
    *,
    threshold: Optional[float],
    max_candidates: Optional[int],
    top_k: int,
    n_hard_negatives: int,
    n_mined_negatives: int,
    mining_refresh: int,
    n_kb_mentions: int = 0,
    logit_adjustment: float = 0.0,
    max_context_tokens: int,
    entity_batch_size: int,
    entity_cache_precision: str,
) -> None:
    """Raise a ValueError naming the component and the setting if a value is out of range."""
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise ValueError(Errors.E1043)
    if max_candidates is not None and max_candidates < 1:
        raise ValueError(
            f"{name}: max_candidates must be at least 1 (or null for no limit), "
            f"got {max_candidates}."
        )
    minimums = {
        "top_k": (top_k, 0),
        "n_hard_negatives": (n_hard_negatives, 0),
        "n_mined_negatives": (n_mined_negatives, 0),
        "n_kb_mentions": (n_kb_mentions, 0),
        "logit_adjustment": (logit_adjustment, 0.0),
        "mining_refresh": (mining_refresh, 1),
        "max_context_tokens": (max_context_tokens, 1),
        "entity_batch_size": (entity_batch_size, 1),
    }
    for key, (value, minimum) in minimums.items():
        if value < minimum:
            raise ValueError(f"{name}: {key} must be at least {minimum}, got {value}.")
    try:
        check_precision(entity_cache_precision)
    except ValueError as err:
        raise ValueError(f"{name}: entity_cache_precision: {err}") from err


def checked_settings(settings: Dict[str, Any]) -> Dict[str, Any]:
    """The entries of ``settings`` (say a constructor's ``locals()``) that
    :func:`check_settings` checks."""
    names = set(inspect.signature(check_settings).parameters) - {"name"}
    return {key: value for key, value in settings.items() if key in names}


def check_kb_type(kb: object, component: str):
    """The KB if it is a :class:`~spacy_m3el.kb.MultimodalKB`; else a TypeError saying how to
    make one."""
    from ..kb import MultimodalKB

    if not isinstance(kb, MultimodalKB):
        raise TypeError(
            f"{component} needs a spacy_m3el MultimodalKB (entities with names, "
            f"descriptions and images), got {type(kb).__name__}. Build one with "
            "spacy_m3el.kb.MultimodalKB or load it with spacy_m3el.KBFromFile.v1."
        )
    return kb
