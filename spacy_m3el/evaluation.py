"""Evaluation as the papers do it: rank the gold entity among all KB entities.

Also reports the linker's own candidate-mode scores (spaCy's NEL P/R/F and
MRR over the candidates it proposes), so both protocols come from one run.
"""

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Collection, Dict, Iterable, List, Optional, Set, Tuple, Union

import numpy
import srsly
from spacy.language import Language
from spacy.tokens import Span
from spacy.training import Example

from .images import copy_image
from .pipeline.entity_index import alias_evidence
from .pipeline.gold import GOLD_OK, reference_gold
from .pipeline.linker import M3ELLinker
from .pipeline.ranking import score_all
from .readers import read_examples
from .scoring import PAPER_HITS, rank_of_gold, ranking_metrics, score_end_to_end, score_linker

FULL_KB_PREFIX = "nel_kb_"
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


@dataclass
class FullKBRanking:
    """Each mention ranked among all KB entities, as :func:`rank_all_entities` measures it.

    ranks (List[int]): The gold's rank by the model's score (the papers' protocol).
    decided (List[int]): The gold's rank by the linker's decision (the model's score plus
        the alias evidence of the mention's name; equal to ``ranks`` without a fitted decision).
    top (List[str]): The KB ID ranked first by the model's score.
    statuses (Counter): The mentions' image statuses.
    precision (str): The storage precision of the entity features that were scored.
    """

    ranks: List[int] = field(default_factory=list)
    decided: List[int] = field(default_factory=list)
    top: List[str] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    precision: str = "float32"


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
    result = rank_all_entities(
        linker, spans, gold_ids, batch_size=batch_size, entity_chunk_size=entity_chunk_size
    )
    return result.ranks, result.statuses


def rank_all_entities(
    linker: M3ELLinker,
    spans: List[Span],
    gold_ids: List[str],
    *,
    batch_size: int = 16,
    entity_chunk_size: int = 2048,
) -> FullKBRanking:
    """Rank each gold entity among all KB entities, ties counted against the model.

    Entities are scored with float32 features (``linker.exact_entity_cache()``), so
    the figures are those of the trained model, not of an int8 copy. Memory is
    bounded by ``batch_size`` x KB size scores at a time.
    """
    cache = linker.exact_entity_cache()
    decision = linker.decision if linker.alias_evidence else None
    result = FullKBRanking(precision=cache.precision)
    for start in range(0, len(spans), batch_size):
        batch = spans[start : start + batch_size]
        images, image_statuses = linker.load_images([span.doc for span in batch])
        result.statuses.update((status or "unused").split(":")[0] for status in image_statuses)
        if decision is not None and decision.unit_weights:  # the units' part too
            decision.check_units(linker.model.net.units.enabled)
            mentions = linker.encode_mentions(batch, images)
            scores, unit_terms = score_all(
                linker.model, mentions, cache, entity_chunk_size, decision.unit_vector
            )
        else:
            scores = linker.score_all_entities(batch, images, entity_chunk_size, cache=cache)
            unit_terms = [None] * len(batch)
        aliases = linker.get_candidates_batch(linker.kb, batch)
        golds = gold_ids[start : start + batch_size]
        for row, gold, candidates, span, unit_term in zip(
            scores, golds, aliases, batch, unit_terms
        ):
            result.ranks.append(rank_of_gold(row, cache.rows[gold]))
            result.top.append(cache.kb_ids[int(numpy.argmax(row))])
            if decision is None or decision.is_pure_ranking:
                result.decided.append(result.ranks[-1])
                continue
            alias_priors, fuzzy_rows = alias_evidence(cache, candidates, span.text)
            priors = numpy.full(len(cache), numpy.nan)
            priors[list(alias_priors)] = list(alias_priors.values())
            fuzzy = numpy.zeros(len(cache), dtype=bool)
            fuzzy[list(fuzzy_rows)] = True
            combined = decision.combine_terms(row, priors, fuzzy, unit_term)
            result.decided.append(rank_of_gold(combined, cache.rows[gold]))
    linker.index.forget_exact()
    return result


def image_breakdown(
    kb, gold_ids: List[str], top: List[str], ranks: Optional[List[int]] = None
) -> Dict[str, object]:
    """Hits@1 split by whether the gold entity has an image, and who the wrong answers are.

    ranks (Optional[List[int]]): The gold's ranks (ties against the model), which decide
        the hits as in the overall Hits@1; without them a hit is ``top == gold``.

    RETURNS (Dict[str, object]): ``hits@1_gold_with_image`` / ``hits@1_gold_without_image``
        (None when no such mention), their mention counts, the share of KB entities
        without an image and the share of wrong top-1 answers without an image.
    """
    has_image = {record.kb_id: bool(record.images) for record in kb.records()}
    hit = [r == 1 for r in ranks] if ranks is not None else [g == t for g, t in zip(gold_ids, top)]
    result: Dict[str, object] = {}
    for label, wanted in (("with_image", True), ("without_image", False)):
        chosen = [h for g, h in zip(gold_ids, hit) if has_image.get(g) == wanted]
        result[f"hits@1_gold_{label}"] = sum(chosen) / len(chosen) if chosen else None
        result[f"n_gold_{label}"] = len(chosen)
    wrong = [t for g, t, h in zip(gold_ids, top, hit) if not h and t != g]
    result["kb_share_without_image"] = (
        sum(not v for v in has_image.values()) / len(has_image) if has_image else 0.0
    )
    result["wrong_top1_share_without_image"] = (
        sum(not has_image.get(t, False) for t in wrong) / len(wrong) if wrong else None
    )
    return result


def seen_breakdown(
    gold_ids: List[str], ranks: List[int], seen: Collection[str]
) -> Dict[str, Optional[float]]:
    """Hits@1 and MRR split by whether the gold entity has training mentions (``seen``)
    or not (``unseen``: zero-shot linking, which a model that memorises its training
    entities fails).

    RETURNS (Dict[str, Optional[float]]): ``hits@1_seen``, ``mrr_seen``, ``n_seen`` and
        the same for ``unseen`` (None when no such mention).
    """
    result: Dict[str, Optional[float]] = {}
    for label, wanted in (("seen", True), ("unseen", False)):
        chosen = [rank for gold, rank in zip(gold_ids, ranks) if (gold in seen) == wanted]
        result[f"n_{label}"] = len(chosen)
        result[f"hits@1_{label}"] = sum(r == 1 for r in chosen) / len(chosen) if chosen else None
        result[f"mrr_{label}"] = sum(1.0 / r for r in chosen) / len(chosen) if chosen else None
    return result


def training_entities(nlp: Language, path: Union[str, Path]) -> Set[str]:
    """The KB IDs of the gold entity mentions of a ``.spacy`` file (its seen entities)."""
    from spacy.tokens import DocBin
    from spacy.training.corpus import walk_corpus

    return {
        ent.kb_id_
        for file in walk_corpus(path, ".spacy")
        for doc in DocBin().from_disk(file).get_docs(nlp.vocab)
        for ent in doc.ents
        if ent.kb_id_
    }


def evaluate_pipeline(
    nlp: Language,
    examples: List[Example],
    *,
    component: Optional[str] = None,
    batch_size: int = 16,
    entity_chunk_size: int = 2048,
    candidates: bool = True,
    seen: Optional[Collection[str]] = None,
) -> Dict[str, object]:
    """Both protocols on a list of examples (the candidate mode only if ``candidates``).

    RETURNS (Dict[str, object]): ``mrr``, ``hits@1/3/5/10/20``, ``mean_rank``,
        ``n_mentions`` (full-KB ranking, float32 entity features: ``entity_precision``),
        ``candidates`` (the linker's own scores, with its cache's precision:
        ``nel_micro_p/r/f``, ``nel_mrr``, ``nel_hits@k``), ``n_entities``,
        ``skipped``, ``images`` (counts by status), ``by_gold_image``
        (:func:`image_breakdown`) and ``decision``: the full-KB ranking by the
        linker's decision (the model's score plus the alias evidence, as fitted;
        the same ranks when not fitted) and the decision's weights; given the KB IDs
        ``seen`` in training (:func:`training_entities`), ``by_training``
        (:func:`seen_breakdown`).
    """
    linker = find_linker(nlp, component)
    spans, gold_ids, skipped = gold_mentions(examples, linker)
    ranking = rank_all_entities(
        linker, spans, gold_ids, batch_size=batch_size, entity_chunk_size=entity_chunk_size
    )
    metrics: Dict[str, object] = dict(ranking_metrics(ranking.ranks, hits=PAPER_HITS))
    metrics["entity_precision"] = ranking.precision
    if candidates:
        candidate_scores = nlp.evaluate(examples)
        metrics["candidates"] = {
            k: v
            for k, v in candidate_scores.items()
            if k.startswith("nel_") and isinstance(v, (int, float))
        }
        metrics["candidates"]["entity_precision"] = linker.entity_cache_precision
    metrics["n_entities"] = len(linker.kb)
    metrics["skipped"] = dict(skipped)
    metrics["images"] = dict(ranking.statuses)
    metrics["by_gold_image"] = image_breakdown(linker.kb, gold_ids, ranking.top, ranking.ranks)
    if seen is not None:
        metrics["by_training"] = seen_breakdown(gold_ids, ranking.ranks, seen)
    metrics["decision"] = dict(ranking_metrics(ranking.decided, hits=PAPER_HITS))
    metrics["decision"]["weights"] = linker.decision.to_dict() if linker.alias_evidence else None
    if finds_entities(nlp, linker):
        metrics["raw_text"] = raw_text_metrics(nlp, examples, linker)
    return metrics


def finds_entities(nlp: Language, linker: M3ELLinker) -> bool:
    """Whether a component before the linker sets ``doc.ents`` (an NER, an entity ruler)."""
    before = nlp.pipe_names[: nlp.pipe_names.index(linker.name)]
    return any("doc.ents" in nlp.get_pipe_meta(name).assigns for name in before)


def raw_text_metrics(
    nlp: Language, examples: List[Example], linker: M3ELLinker
) -> Dict[str, float]:
    """The whole pipeline on the raw texts (and images): NER precision, recall and F
    (``ents_p/r/f``) and linking on the predicted spans (:func:`score_end_to_end`)."""
    from spacy.scorer import Scorer

    docs = []
    for eg in examples:
        doc = nlp.make_doc(eg.reference.text)
        copy_image(eg.reference, doc, linker.image_attr)
        docs.append(doc)
    predicted = [Example(doc, eg.reference) for doc, eg in zip(nlp.pipe(docs), examples)]
    metrics = {
        key: value
        for key, value in Scorer.score_spans(predicted, "ents").items()
        if key != "ents_per_type"
    }
    metrics.update(score_end_to_end(predicted))
    return metrics


def full_kb_scorer(
    batch_size: int = 16, entity_chunk_size: int = 2048, candidates: bool = True
) -> Callable[..., Dict[str, float]]:
    """A scorer that ranks each dev mention among all KB entities, as the papers select models.

    The keys are ``nel_kb_mrr``, ``nel_kb_hits@1/3/5`` and ``nel_kb_mean_rank``
    (float32 entity features, ties counted against the model); with ``candidates``
    also the linker's candidate-mode keys of :func:`~.scoring.score_linker`
    (``nel_mrr``, ...: cheaper, but a gold outside the candidates counts 0).
    """

    def score(examples: Iterable[Example], *, component: M3ELLinker, **kwargs) -> Dict[str, float]:
        examples = list(examples)
        spans, gold_ids, _ = gold_mentions(examples, component)
        ranking = rank_all_entities(
            component, spans, gold_ids, batch_size=batch_size, entity_chunk_size=entity_chunk_size
        )
        result = dict(ranking_metrics(ranking.ranks, prefix=FULL_KB_PREFIX))
        if candidates:
            result.update(score_linker(examples, **kwargs))
        return result

    return score


def evaluate_path(
    model: Union[str, Path],
    data: Union[str, Path],
    output: Optional[Union[str, Path]] = None,
    seen_in: Optional[Union[str, Path]] = None,
    **kwargs,
) -> Dict[str, object]:
    """Load a pipeline, evaluate it on a ``.spacy`` file and write the metrics JSON.

    seen_in (Optional[Union[str, Path]]): The training ``.spacy`` file(s): split the
        scores by whether the gold entity is mentioned there (``by_training``).
    """
    import spacy

    nlp = spacy.load(model)
    linker = find_linker(nlp, kwargs.get("component"))
    examples = read_examples(nlp, data, image_attr=linker.image_attr)
    seen = training_entities(nlp, seen_in) if seen_in is not None else None
    metrics = evaluate_pipeline(nlp, examples, seen=seen, **kwargs)
    if output is not None:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        srsly.write_json(output, metrics)
    return metrics


def format_metrics(metrics: Dict[str, object], title: str = "") -> str:
    """A readable table of one run's metrics."""
    lines = [title] if title else []
    precision = metrics.get("entity_precision", "int8")
    lines.append(
        f"Full-KB ranking over {metrics['n_entities']} entities, {metrics['n_mentions']} "
        f"mentions ({precision} entity features)"
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
        lines.append(
            "Linker, candidate mode (alias + nearest candidates, reranked; the cheap "
            "measure: a gold outside the candidates counts 0)"
        )
        for key in ("nel_micro_p", "nel_micro_r", "nel_micro_f", "nel_mrr", "nel_hits@1"):
            if key in candidates:
                lines.append(f"  {key:<12} {float(candidates[key]) * 100:7.2f}%")
    raw = metrics.get("raw_text")
    if raw:
        lines.append("Raw text: NER finds the mentions, the linker links them (end to end)")
        for key in ("ents_p", "ents_r", "ents_f", "link_p", "link_r", "link_f"):
            lines.append(f"  {key:<10} {float(raw[key] or 0.0) * 100:7.2f}%")
    if metrics.get("skipped"):
        lines.append(f"Skipped mentions: {metrics['skipped']}")
    if metrics.get("images"):
        lines.append(f"Mention images: {metrics['images']}")
    split = metrics.get("by_gold_image") or {}
    if split.get("n_gold_without_image"):
        groups = (("gold_with_image", "with"), ("gold_without_image", "without"))
        lines.append(_split_line("Hits@1 by the gold's image", split, groups))
    by_training = metrics.get("by_training") or {}
    if by_training:
        groups = (("seen", "seen"), ("unseen", "zero-shot"))
        lines.append(_split_line("Hits@1 by the gold's training mentions", by_training, groups))
    return "\n".join(lines)


def _split_line(title: str, split: Dict[str, object], groups: Tuple[Tuple[str, str], ...]) -> str:
    """``title: label hits% (n), ...`` for the groups of a split that have mentions."""
    cells = [
        f"{label} {float(split[f'hits@1_{key}']) * 100:.2f}% ({split[f'n_{key}']})"
        for key, label in groups
        if split.get(f"hits@1_{key}") is not None
    ]
    return f"{title}: " + ", ".join(cells)


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
