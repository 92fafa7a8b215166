"""Fitting the linking decision on dev data: each mention's candidates, scores and gold."""

from typing import Any, Iterable, List, Optional, Tuple

import numpy
from spacy.training import Example

from .decision import LinkDecision, fit_decision
from .gold import GOLD_OK, reference_gold
from .ranking import candidate_score_parts

Group = Tuple[numpy.ndarray, List[float], List[bool], int, Optional[numpy.ndarray]]


def decision_groups(
    linker: Any, examples: Iterable[Example], batch_size: int = 64, units: bool = True
) -> List[Group]:
    """Stage 1 and the model's scores for every gold mention whose gold is among its candidates.

    linker (M3ELLinker): The trained component (its KB, model and stage-1 settings).
    examples (Iterable[Example]): Dev examples; their reference docs' entity spans
        carry the gold KB IDs, and images as the linker reads them.
    RETURNS (List[Group]): Per usable mention: candidate scores, alias priors (NaN for
        candidates found by embedding similarity only), fuzzy-match flags, the
        gold's position and the candidates' unit scores ``[C, units]`` (None without
        ``units``).
    """
    gold = [
        (ent, kb_id)
        for eg in examples
        for ent, kb_id, status in reference_gold(linker.kb, eg.reference.ents)
        if status == GOLD_OK
    ]
    groups: List[Group] = []
    cache = linker.entity_cache
    for start in range(0, len(gold), batch_size):
        batch = gold[start : start + batch_size]
        spans = [ent for ent, _ in batch]
        images, _ = linker.load_images([span.doc for span in spans])
        mentions = linker.encode_mentions(spans, images)
        candidate_sets = linker.retrieve(spans, mentions)
        scores, units = candidate_score_parts(
            linker.model, mentions, cache, candidate_sets, units=units
        )
        for (_, kb_id), candidates, row_scores, row_units in zip(
            batch, candidate_sets, scores, units
        ):
            rows = list(candidates)
            if cache.rows[kb_id] in rows:
                priors, fuzzy = candidates.evidence()
                gold_row = rows.index(cache.rows[kb_id])
                groups.append((row_scores, priors, fuzzy, gold_row, row_units))
    return groups


def fitted_decision(linker: Any, examples: Iterable[Example], per_unit: bool) -> LinkDecision:
    """The decision fitted on dev examples: a weight per matching unit of the linker's
    model (``per_unit``) or one for its overall score, plus the alias evidence."""
    units = linker.model.net.units.enabled if per_unit else ()
    return fit_decision(decision_groups(linker, examples, units=per_unit), units=units)
