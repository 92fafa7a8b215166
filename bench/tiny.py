"""Measurements with the tiny encoder trained on the demo (one KB size per process).

``measure_size`` and ``measure_training`` run in a fresh interpreter each
(``bench.scale`` starts them), so their peak RSS is their own.
"""

import time
from pathlib import Path
from typing import Dict, Sequence

import numpy

from .common import Timer, grow_kb, median_run, mention_docs, peak_rss_mib

STAGES = ("encoder", "stage1", "stage2")


def link_by_stage(linker, docs: list, batch_size: int = 64) -> Dict[str, float]:
    """Link docs (one mention each) as ``nlp.pipe`` does, stage by stage: seconds per stage.

    The batches are those of ``nlp.pipe(docs, batch_size=batch_size)``; each
    runs the component's public stages: images, ``encode_mentions`` (encoder),
    ``retrieve`` (stage 1, with the alias lookup) and ``rerank`` (stage 2).
    """
    timer = Timer()
    for start in range(0, len(docs), batch_size):
        batch = docs[start : start + batch_size]
        spans = [doc.ents[0] for doc in batch]
        images, _ = linker.load_images(batch)
        with timer("encoder"):
            mentions = linker.encode_mentions(spans, images)
        with timer("stage1"):
            rows = linker.retrieve(spans, mentions)
        with timer("stage2"):
            linker.rerank(mentions, rows)
    return timer.seconds


def bare_encoder(nlp, docs: list, repeats: int = 5) -> float:
    """Mentions per second of image decoding + preprocessing + encoder forward only."""
    from spacy_m3el.images import get_image, load_image
    from spacy_m3el.pipeline.inputs import mention_text

    linker = nlp.get_pipe("m3el_linker")
    texts = [mention_text(d.ents[0], linker.max_context_tokens) for d in docs]

    def run(batch_docs, batch_texts):
        images = []
        for doc in batch_docs:
            value = get_image(doc, linker.image_attr)
            images.append(load_image(value) if value is not None else None)
        linker.model.encode_features("mention", linker.model.featurize(batch_texts, images))

    run(docs[:32], texts[:32])

    def encode_all():
        for i in range(0, len(docs), 64):
            run(docs[i : i + 64], texts[i : i + 64])

    return len(docs) / median_run(encode_all, repeats)[0]


def measure_size(
    pipeline: str,
    corpus: str,
    size: int,
    exhaustive_limit: int,
    max_candidates: str = "pipeline",
    mentions: int = 0,
    repeats: int = 5,
) -> Dict[str, float]:
    """Cache, two-stage linking, stage-1 recall and exhaustive ranking at one KB size.

    mentions (int): Use the first ``mentions`` test mentions (0: all).
    repeats (int): Timed runs of ``nlp.pipe`` (and of the stages); the median is kept.
    """
    import spacy

    from spacy_m3el.pipeline.entity_cache import encode_side
    from spacy_m3el.scoring import rank_of_gold

    pipeline, corpus = Path(pipeline), Path(corpus)
    nlp = spacy.load(pipeline)
    linker = nlp.get_pipe("m3el_linker")
    kb = grow_kb(linker.kb, size)
    linker.set_kb(lambda vocab: kb)
    if max_candidates != "pipeline":
        linker.max_candidates = None if max_candidates == "none" else int(max_candidates)
    result: Dict[str, float] = {"size": size}
    start = time.perf_counter()
    cache = linker.entity_cache
    result["cache_build_s"] = time.perf_counter() - start
    result["bytes_per_entity_int8"] = cache.bytes_per_entity
    side = cache.side_rows(range(min(len(cache), 2000)))
    for precision in ("float16", "float32"):
        stored = encode_side(side, precision)
        result[f"bytes_per_entity_{precision}"] = sum(v.nbytes for v in stored.values()) / len(
            side["has_image"]
        )
    docs, gold = mention_docs(nlp, corpus / "test.spacy", limit=mentions)
    n = len(docs)
    # Two-stage linking through nlp.pipe; then the same batches stage by stage.
    list(nlp.pipe([d.copy() for d in docs], batch_size=64))  # warm-up: first calls are slower
    copies = iter([[d.copy() for d in docs] for _ in range(repeats)])
    elapsed, linked = median_run(lambda: list(nlp.pipe(next(copies), batch_size=64)), repeats)
    result.update({"mentions": n, "pipe_ms": 1000 * elapsed / n, "pipe_per_s": n / elapsed})
    _, stage_seconds = median_run(lambda: link_by_stage(linker, docs, batch_size=64), repeats)
    for stage in STAGES:
        result[f"{stage}_ms"] = 1000 * stage_seconds.get(stage, 0.0) / n
    result["bare_per_s"] = bare_encoder(nlp, docs, repeats)
    predicted = [d.ents[0].kb_id_ for d in linked]
    # Stage-1 recall: the gold among the reranked candidates, and retrieval alone at several k.
    images, _ = linker.load_images(docs)
    spans = [d.ents[0] for d in docs]
    encoded = linker.encode_mentions(spans, images)
    ranked = cache.nearest(linker.model.retrieval_vectors(encoded, query=True), 50)
    gold_rows = [cache.rows[g] for g in gold]
    for k in (1, 5, 10, 50):
        result[f"retrieval_recall@{k}"] = float(
            numpy.mean([row in r[:k] for row, r in zip(gold_rows, ranked)])
        )
    candidates = linker.retrieve(spans, encoded)
    stage1_sets = [set(rows) for rows in candidates]
    result["stage1_recall"] = float(
        numpy.mean([row in s for row, s in zip(gold_rows, stage1_sets)])
    )
    result["candidates"] = float(numpy.mean([len(rows) for rows in candidates]))
    uncapped = [
        len(set(cache.rows_of(c.entity_ for c in a)) | set(r[: linker.top_k]))
        for a, r in zip(linker.get_candidates_batch(linker.kb, spans), ranked)
    ]
    result["candidates_uncapped"] = float(numpy.mean(uncapped))
    result["top_k"], result["max_candidates"] = linker.top_k, linker.max_candidates
    # Exhaustive ranking on (a prefix of) the same mentions: the gold's rank and the top-1.
    m = min(n, exhaustive_limit)
    ranks, top1 = [], []
    start = time.perf_counter()
    for i in range(0, m, 16):  # bounded memory: 16 mentions x the KB at a time
        batch = slice(i, min(i + 16, m))
        batch_images, _ = linker.load_images(docs[batch])
        scores = linker.score_all_entities(spans[batch], batch_images, entity_chunk_size=4096)
        ranks.extend(rank_of_gold(row, cache.rows[g]) for row, g in zip(scores, gold[batch]))
        top1.extend(int(row.argmax()) for row in scores)
    result["exhaustive_ms"] = 1000 * (time.perf_counter() - start) / m
    result["exhaustive_mentions"] = m
    result["hits1_exhaustive"] = float(numpy.mean([r == 1 for r in ranks]))
    result["hits1_two_stage_same"] = float(
        numpy.mean([p == g for p, g in zip(predicted[:m], gold[:m])])
    )
    result["hits1_two_stage"] = float(numpy.mean([p == g for p, g in zip(predicted, gold)]))
    result["exhaustive_top1_in_stage1"] = float(
        numpy.mean([t in s for t, s in zip(top1, stage1_sets[:m])])
    )
    result["same_top1"] = float(
        numpy.mean([cache.kb_ids[t] == p for t, p in zip(top1, predicted[:m])])
    )
    result["peak_rss_mib"] = peak_rss_mib()
    return result


def measure_training(
    pipeline: str, corpus: str, batch_sizes: Sequence[int] = (8, 32, 128)
) -> Dict[int, Dict[str, float]]:
    """Examples per second of ``nlp.update`` (3 timed batches after one warm-up) per batch size."""
    import spacy

    from spacy_m3el.readers import read_examples

    pipeline, corpus = Path(pipeline), Path(corpus)
    nlp = spacy.load(pipeline)
    examples = read_examples(nlp, corpus / "train.spacy")
    optimizer = nlp.create_optimizer()
    out = {}
    for size in batch_sizes:
        batches = [examples[i * size : (i + 1) * size] for i in range(4)]
        nlp.update(batches[0], sgd=optimizer)
        start = time.perf_counter()
        for batch in batches[1:]:
            nlp.update(batch, sgd=optimizer)
        out[size] = {
            "examples_per_s": 3 * size / (time.perf_counter() - start),
            "peak_rss_mib": peak_rss_mib(),
        }
    return out
