"""Evaluation as the papers do it: rank the gold entity among all KB entities.

Also reports the linker's own candidate-mode scores (spaCy's NEL P/R/F and
MRR over the candidates it proposes), so both protocols come from one run.
"""

from collections import Counter
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple, Union

import numpy
import srsly
from spacy.language import Language
from spacy.tokens import Span
from spacy.training import Example

from .pipeline.entity_index import alias_evidence
from .pipeline.gold import GOLD_OK, reference_gold
from .pipeline.linker import M3ELLinker
from .readers import read_examples
from .scoring import PAPER_HITS, rank_of_gold, ranking_metrics

METRIC_KEYS = ("mrr", "hits@1", "hits@3", "hits@5", "hits@10", "hits@20", "mean_rank", "n_mentions")


def find_linker(nlp: Language, name: Optional[str] = None) -> M3ELLinker:
    """The pipeline's m3el_linker (by name, or the only one)."""
    linkers = [
        (n, p) for n, p in nlp.pipeline if isinstance(p, M3ELLinker) and (name is None or n == name)
    ]
    if len(linkers) != 1:
        raise ValueError(
            f"Expected one m3el_linker component{f' named {name!r}' if name else ''}, "
            f"found {len(linkers)}."
        )
    return linkers[0][1]


def gold_mentions(
    examples: Iterable[Example], linker: M3ELLinker
) -> Tuple[List[Span], List[str], Counter]:
    """Gold entity spans (on the reference docs) whose KB ID is in the KB.

    RETURNS (Tuple[List[Span], List[str], Counter]): spans, gold IDs and counts of
        skipped mentions by reason (``nil``, ``gold_not_in_kb``).
    """
    spans, gold_ids, skipped = [], [], Counter()
    for eg in examples:
        for ent, kb_id, status in reference_gold(linker.kb, eg.reference.ents):
            if status == GOLD_OK:
                spans.append(ent)
                gold_ids.append(kb_id)
            else:
                skipped[status] += 1
    return spans, gold_ids, skipped


def exhaustive_ranks(
    linker: M3ELLinker,
    spans: List[Span],
    gold_ids: List[str],
    *,
    batch_size: int = 16,
    entity_chunk_size: int = 2048,
) -> Tuple[List[int], Counter]:
    """Rank of each gold entity among all KB entities by the model's score (the papers' protocol).

    RETURNS (Tuple[List[int], Counter]): the ranks and the mentions' image statuses.
    """
    ranks, _, statuses = exhaustive_rank_sets(
        linker, spans, gold_ids, batch_size=batch_size, entity_chunk_size=entity_chunk_size
    )
    return ranks, statuses


def exhaustive_rank_sets(
    linker: M3ELLinker,
    spans: List[Span],
    gold_ids: List[str],
    *,
    batch_size: int = 16,
    entity_chunk_size: int = 2048,
) -> Tuple[List[int], List[int], Counter]:
    """Rank of each gold entity among all KB entities, ties counted against the model.

    Memory is bounded by ``batch_size`` x KB size scores at a time.
    RETURNS (Tuple[List[int], List[int], Counter]): the ranks by the model's score
        (the papers' protocol), the ranks by the linker's decision (the model's score
        plus the alias evidence of the mention's name; equal to the first without a
        fitted decision) and the mentions' image statuses.
    """
    cache = linker.entity_cache
    decision = linker.decision if linker.alias_evidence else None
    ranks: List[int] = []
    decided: List[int] = []
    statuses: Counter = Counter()
    for start in range(0, len(spans), batch_size):
        batch = spans[start : start + batch_size]
        docs = [span.doc for span in batch]
        images, image_statuses = linker.load_images(docs)
        statuses.update((status or "unused").split(":")[0] for status in image_statuses)
        scores = linker.score_all_entities(batch, images, entity_chunk_size=entity_chunk_size)
        aliases = linker.get_candidates_batch(linker.kb, batch)
        golds = gold_ids[start : start + batch_size]
        for row, gold, candidates, span in zip(scores, golds, aliases, batch):
            ranks.append(rank_of_gold(row, cache.rows[gold]))
            if decision is None or decision.is_pure_ranking:
                decided.append(ranks[-1])
                continue
            alias_priors, fuzzy_rows = alias_evidence(cache, candidates, span.text)
            priors = numpy.full(len(cache), numpy.nan)
            priors[list(alias_priors)] = list(alias_priors.values())
            fuzzy = numpy.zeros(len(cache), dtype=bool)
            fuzzy[list(fuzzy_rows)] = True
            decided.append(rank_of_gold(decision.combine(row, priors, fuzzy), cache.rows[gold]))
    return ranks, decided, statuses


def evaluate_pipeline(
    nlp: Language,
    examples: List[Example],
    *,
    component: Optional[str] = None,
    batch_size: int = 16,
    entity_chunk_size: int = 2048,
) -> Dict[str, object]:
    """Both protocols on a list of examples.

    RETURNS (Dict[str, object]): ``mrr``, ``hits@1/3/5/10/20``, ``mean_rank``,
        ``n_mentions`` (full-KB ranking), ``candidates`` (the linker's own
        scores: ``nel_micro_p/r/f``, ``nel_mrr``, ``nel_hits@k``),
        ``n_entities``, ``skipped``, ``images`` (counts by status) and
        ``decision``: the full-KB ranking by the linker's decision (the model's
        score plus the alias evidence, as fitted; the same ranks when not fitted)
        and the decision's weights.
    """
    linker = find_linker(nlp, component)
    spans, gold_ids, skipped = gold_mentions(examples, linker)
    ranks, decided, statuses = exhaustive_rank_sets(
        linker, spans, gold_ids, batch_size=batch_size, entity_chunk_size=entity_chunk_size
    )
    metrics: Dict[str, object] = dict(ranking_metrics(ranks, hits=PAPER_HITS))
    candidate_scores = nlp.evaluate(examples)
    metrics["candidates"] = {
        k: v
        for k, v in candidate_scores.items()
        if k.startswith("nel_") and isinstance(v, (int, float))
    }
    metrics["n_entities"] = len(linker.kb)
    metrics["skipped"] = dict(skipped)
    metrics["images"] = dict(statuses)
    metrics["decision"] = dict(ranking_metrics(decided, hits=PAPER_HITS))
    metrics["decision"]["weights"] = linker.decision.to_dict() if linker.alias_evidence else None
    return metrics


def evaluate_path(
    model: Union[str, Path],
    data: Union[str, Path],
    output: Optional[Union[str, Path]] = None,
    **kwargs,
) -> Dict[str, object]:
    """Load a pipeline, evaluate it on a ``.spacy`` file and write the metrics JSON."""
    import spacy

    nlp = spacy.load(model)
    linker = find_linker(nlp, kwargs.get("component"))
    examples = read_examples(nlp, data, image_attr=linker.image_attr)
    metrics = evaluate_pipeline(nlp, examples, **kwargs)
    if output is not None:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        srsly.write_json(output, metrics)
    return metrics


def format_metrics(metrics: Dict[str, object], title: str = "") -> str:
    """A readable table of one run's metrics."""
    lines = [title] if title else []
    lines.append(
        f"Full-KB ranking over {metrics['n_entities']} entities, {metrics['n_mentions']} mentions"
    )
    for key in METRIC_KEYS[:-1]:
        value = float(metrics[key])
        lines.append(
            f"  {key:<10} {value:8.2f}"
            if key == "mean_rank"
            else f"  {key:<10} {value * 100:7.2f}%"
        )
    decision = metrics.get("decision") or {}
    if decision.get("weights") and decision["weights"].get("fitted_on"):
        lines.append("Full-KB ranking by the linker's decision (model score + alias evidence)")
        for key in ("mrr", "hits@1", "hits@5"):
            lines.append(f"  {key:<10} {float(decision[key]) * 100:7.2f}%")
    candidates = metrics.get("candidates", {})
    if candidates:
        lines.append("Linker (alias + nearest candidates, reranked)")
        for key in ("nel_micro_p", "nel_micro_r", "nel_micro_f", "nel_mrr", "nel_hits@1"):
            if key in candidates:
                lines.append(f"  {key:<12} {float(candidates[key]) * 100:7.2f}%")
    if metrics.get("skipped"):
        lines.append(f"Skipped mentions: {metrics['skipped']}")
    if metrics.get("images"):
        lines.append(f"Mention images: {metrics['images']}")
    return "\n".join(lines)


def format_comparison(runs: Dict[str, Dict[str, object]]) -> str:
    """Side-by-side table of several runs (e.g. multimodal vs text-only)."""
    names = list(runs)
    width = max(12, *(len(n) for n in names))
    header = f"{'metric':<12}" + "".join(f"{n:>{width + 2}}" for n in names)
    lines = [header, "-" * len(header)]
    for key in METRIC_KEYS:
        cells = []
        for name in names:
            value = float(runs[name][key])
            if key == "n_mentions":
                cells.append(f"{int(value):>{width + 2}d}")
            elif key == "mean_rank":
                cells.append(f"{value:>{width + 2}.2f}")
            else:
                cells.append(f"{value * 100:>{width + 1}.2f}%")
        lines.append(f"{key:<12}" + "".join(cells))
    for key in ("nel_micro_f",):
        cells = [
            f"{float(runs[n].get('candidates', {}).get(key, 0.0)) * 100:>{width + 1}.2f}%"
            for n in names
        ]
        lines.append(f"{key:<12}" + "".join(cells))
    return "\n".join(lines)
