"""Stage 2 of linking (reranking candidates with the full score) and exhaustive ranking."""

from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import numpy
from spacy.tokens import Doc, Span

from ..images import STATUS_ATTR
from ..kb import NIL
from ..ml.model import M3ELModel
from ..ml.sides import SideArrays
from ..scoring import CANDIDATES_ATTR
from .decision import LinkDecision
from .entity_cache import EntityCache
from .entity_index import CandidateSet

Ranking = List[Tuple[str, float]]


@dataclass
class DocPrediction:
    """What ``predict`` found for one doc: a ranking per entity (None = not linked)."""

    rankings: List[Optional[Ranking]] = field(default_factory=list)
    image_status: Optional[str] = None


def install_span_extension() -> None:
    """``span._.m3el_candidates``: the ranked ``(kb_id, probability)`` pairs of a linked span."""
    if not Span.has_extension(CANDIDATES_ATTR):
        Span.set_extension(CANDIDATES_ATTR, default=None)


def rerank(
    model: M3ELModel,
    mentions: SideArrays,
    cache: EntityCache,
    rows_per_mention: Sequence[Sequence[int]],
    decision: Optional[LinkDecision] = None,
) -> List[Ranking]:
    """Stage 2: the full score of each mention's candidate rows, as rankings.

    Only the candidates' rows are decoded from the cache, once each, and all
    mentions are scored in one call.

    model (M3ELModel): The model.
    mentions (SideArrays): The mentions' side features.
    cache (EntityCache): The entity cache of the current weights and KB.
    rows_per_mention (Sequence[Sequence[int]]): The cache rows to score per mention
        (stage 1's ``CandidateSet`` objects, or plain lists of rows).
    decision (Optional[LinkDecision]): Combines the model's score with the alias
        evidence of ``CandidateSet`` objects; None ranks by the model's score.
    RETURNS (List[Ranking]): Per mention, ``(kb_id, probability)`` best first.
    """
    rankings = []
    by_unit = decision is not None and bool(decision.unit_weights)
    if by_unit:
        decision.check_units(model.net.units.enabled)
    scores, unit_scores = candidate_score_parts(model, mentions, cache, rows_per_mention, by_unit)
    for rows, row_scores, row_units in zip(rows_per_mention, scores, unit_scores):
        if decision is not None and not decision.is_pure_ranking:
            candidates = rows if isinstance(rows, CandidateSet) else CandidateSet(list(rows))
            row_scores = decision.combine(row_scores, *candidates.evidence(), row_units)
        rankings.append(to_ranking([cache.kb_ids[row] for row in rows], row_scores))
    return rankings


def candidate_scores(
    model: M3ELModel,
    mentions: SideArrays,
    cache: EntityCache,
    rows_per_mention: Sequence[Sequence[int]],
) -> List[numpy.ndarray]:
    """The model's score of each mention's candidate rows (all mentions in one call)."""
    return candidate_score_parts(model, mentions, cache, rows_per_mention)[0]


def candidate_score_parts(
    model: M3ELModel,
    mentions: SideArrays,
    cache: EntityCache,
    rows_per_mention: Sequence[Sequence[int]],
    units: bool = False,
) -> Tuple[List[numpy.ndarray], List[Optional[numpy.ndarray]]]:
    """Per mention, the model's scores of its candidate rows [C] and, with ``units``,
    the units' scores [C, units] (``M3ELModel.unit_scores``; else None)."""
    unique_rows = sorted({row for rows in rows_per_mention for row in rows})
    if not unique_rows:
        empty = [numpy.zeros(0, dtype="float32") for _ in rows_per_mention]
        width = len(model.net.units.enabled)
        return empty, [numpy.zeros((0, width), "float32") if units else None for _ in empty]
    local = {row: j for j, row in enumerate(unique_rows)}
    # One row of candidates per mention, padded (with entity 0) to the longest.
    width = max(len(rows) for rows in rows_per_mention)
    entity_index = numpy.zeros((len(rows_per_mention), width), dtype="int64")
    for i, rows in enumerate(rows_per_mention):
        entity_index[i, : len(rows)] = [local[row] for row in rows]
    entities = cache.side_rows(unique_rows)
    if units:
        scores, parts = model.unit_scores(mentions, entities, entity_index)
    else:
        scores, parts = model.score(mentions, entities, entity_index), None
    sizes = [len(rows) for rows in rows_per_mention]
    return (
        [scores[i, :n] for i, n in enumerate(sizes)],
        [None if parts is None else parts[i, :n] for i, n in enumerate(sizes)],
    )


def score_all(
    model: M3ELModel,
    mentions: SideArrays,
    cache: EntityCache,
    entity_chunk_size: int = 2048,
    unit_weights: Optional[numpy.ndarray] = None,
):
    """Full scores of each mention against every cached entity (the papers' protocol).

    Entities are scored in chunks, so memory is bounded by
    ``n_mentions * entity_chunk_size`` pairs, plus the ``[n_mentions, N]`` result.

    unit_weights (Optional[numpy.ndarray[units]]): Also return the units' scores
        weighted and summed (``M3ELModel.unit_scores @ unit_weights``), chunk by chunk,
        for a linking decision that weighs the units.
    RETURNS (numpy.ndarray[n_mentions, N]): Scores, columns in ``cache.kb_ids`` order
        (with ``unit_weights``, a tuple of the scores and the weighted unit sums).
    """
    n_mentions, n_entities = len(mentions[next(iter(mentions))]), len(cache)
    scores = numpy.zeros((n_mentions, n_entities), dtype="float32")
    by_unit = unit_weights is not None
    unit_term = numpy.zeros((n_mentions, n_entities), "float64") if by_unit else None
    for start in range(0, n_entities, entity_chunk_size):
        rows = list(range(start, min(start + entity_chunk_size, n_entities)))
        chunk = slice(start, start + len(rows))
        if by_unit:
            scores[:, chunk], columns = model.unit_scores(mentions, cache.side_rows(rows), None)
            unit_term[:, chunk] = columns.astype("float64") @ unit_weights
        else:
            scores[:, chunk] = model.score(mentions, cache.side_rows(rows), None)
    return (scores, unit_term) if by_unit else scores


def to_ranking(kb_ids: Sequence[str], scores: numpy.ndarray) -> Ranking:
    """Sort candidates by score; report softmax probabilities over the candidates."""
    if not kb_ids:
        return []
    scores = scores.astype("float64")
    probabilities = numpy.exp(scores - scores.max())
    probabilities /= probabilities.sum()
    order = numpy.argsort(-scores, kind="stable")
    return [(kb_ids[i], float(probabilities[i])) for i in order]


def choose(ranking: Ranking, threshold: Optional[float]) -> str:
    """The linked KB ID: the best candidate, or NIL if there is none or it is below threshold."""
    if not ranking:
        return NIL
    kb_id, probability = ranking[0]
    if threshold is not None and probability < threshold:
        return NIL
    return kb_id


def annotate(doc: Doc, prediction: DocPrediction, threshold: Optional[float], overwrite: bool):
    """Write a doc's prediction: the image status, ``span._.m3el_candidates`` and the KB
    ID (``choose``) of each ranked entity; an entity without a ranking gets NIL. With
    ``overwrite`` false, tokens that already have a KB ID keep it."""
    if prediction.image_status is not None:
        doc._.set(STATUS_ATTR, prediction.image_status)
    for ent, ranking in zip(doc.ents, prediction.rankings):
        if ranking is None:
            kb_id = NIL
        else:
            ent._.set(CANDIDATES_ATTR, ranking)
            kb_id = choose(ranking, threshold)
        for token in ent:
            if overwrite or token.ent_kb_id == 0:
                token.ent_kb_id_ = kb_id
