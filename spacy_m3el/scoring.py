"""Ranking metrics (MRR, Hits@k, mean rank) and the linker's scorer."""

from typing import Dict, Iterable, List, Optional, Sequence

import numpy
from spacy.scorer import Scorer
from spacy.training import Example

from .kb import NIL

CANDIDATES_ATTR = "m3el_candidates"
DEFAULT_HITS = (1, 3, 5)
PAPER_HITS = (1, 3, 5, 10, 20)


def rank_of_gold(scores: numpy.ndarray, gold: int) -> int:
    """1-based rank of column ``gold``, counting ties against the model.

    The rank is the number of entries whose score is >= the gold's score, so a
    model whose scores collapse to a constant gets the worst rank, not the best.
    NaN scores also count against the model: a NaN gold score gets the worst
    rank, and a NaN elsewhere ranks above the gold.
    """
    scores = numpy.asarray(scores)
    gold_score = scores[gold]
    if numpy.isnan(gold_score):
        return int(scores.size)
    return int(((scores >= gold_score) | numpy.isnan(scores)).sum())


def ranking_metrics(
    ranks: Sequence[Optional[int]], hits: Sequence[int] = DEFAULT_HITS, prefix: str = ""
) -> Dict[str, float]:
    """MRR, Hits@k and mean rank from 1-based ranks.

    ranks (Sequence[Optional[int]]): rank per mention; None if the gold entity
        was not ranked at all (not among the candidates): reciprocal rank 0,
        no hit, and left out of the mean rank.
    RETURNS (Dict[str, float]): ``{prefix}mrr``, ``{prefix}hits@k``,
        ``{prefix}mean_rank`` (over ranked mentions) and ``{prefix}n_mentions``.
    """
    n = len(ranks)
    ranked = numpy.array([r for r in ranks if r is not None], dtype="float64")
    result: Dict[str, float] = {f"{prefix}n_mentions": n}
    if n == 0:
        result.update({f"{prefix}mrr": 0.0, f"{prefix}mean_rank": 0.0})
        result.update({f"{prefix}hits@{k}": 0.0 for k in hits})
        return result
    result[f"{prefix}mrr"] = float((1.0 / ranked).sum() / n)
    for k in hits:
        result[f"{prefix}hits@{k}"] = float((ranked <= k).sum() / n)
    result[f"{prefix}mean_rank"] = float(ranked.mean()) if ranked.size else 0.0
    return result


def candidate_ranks(examples: Iterable[Example]) -> List[Optional[int]]:
    """Rank of the gold KB ID among each predicted entity's ranked candidates."""
    ranks: List[Optional[int]] = []
    for eg in examples:
        gold = {(ent.start_char, ent.end_char): ent.kb_id_ for ent in eg.reference.ents}
        for ent in eg.predicted.ents:
            gold_id = gold.get((ent.start_char, ent.end_char))
            if not gold_id or gold_id == NIL:
                continue
            candidates = ent._.get(CANDIDATES_ATTR) or []
            ids = [kb_id for kb_id, _ in candidates]
            ranks.append(ids.index(gold_id) + 1 if gold_id in ids else None)
    return ranks


def score_linker(examples: Iterable[Example], **kwargs) -> Dict[str, float]:
    """spaCy's NEL precision/recall/F plus ranking metrics over the candidates.

    RETURNS (Dict[str, float]): ``nel_micro_p/r/f`` (and spaCy's other NEL keys),
        ``nel_mrr``, ``nel_hits@1/3/5`` and ``nel_n_mentions``.
    """
    examples = list(examples)
    scores = Scorer.score_links(examples, negative_labels=[NIL], **kwargs)
    ranking = ranking_metrics(candidate_ranks(examples), prefix="nel_")
    scores.update({key: value for key, value in ranking.items() if key != "nel_mean_rank"})
    return scores


def score_end_to_end(examples: Iterable[Example]) -> Dict[str, float]:
    """Linking on predicted spans, strictly: a predicted link counts when a gold entity has
    the same character offsets and the same KB ID (an NER miss or a boundary error costs
    recall and precision, as it would a user with raw text).

    RETURNS (Dict[str, float]): ``link_p``, ``link_r``, ``link_f`` (NIL links and NIL gold
        left out) and the counts ``link_predicted``, ``link_gold``, ``link_correct``.
    """
    predicted = gold = correct = 0
    for eg in examples:
        truth = {
            (ent.start_char, ent.end_char): ent.kb_id_
            for ent in eg.reference.ents
            if ent.kb_id_ and ent.kb_id_ != NIL
        }
        gold += len(truth)
        for ent in eg.predicted.ents:
            if not ent.kb_id_ or ent.kb_id_ == NIL:
                continue
            predicted += 1
            correct += truth.get((ent.start_char, ent.end_char)) == ent.kb_id_
    p = correct / predicted if predicted else 0.0
    r = correct / gold if gold else 0.0
    return {
        "link_p": p,
        "link_r": r,
        "link_f": 2 * p * r / (p + r) if p + r else 0.0,
        "link_predicted": predicted,
        "link_gold": gold,
        "link_correct": correct,
    }
