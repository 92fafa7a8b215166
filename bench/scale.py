"""Linking at knowledge-base scale: entity cache, two-stage linking, exhaustive ranking.

Run:  python bench/scale.py               (1K, 10K, 100K entities; ~20-30 min on 2 cores)
      python bench/scale.py --quick       (1K and 10K; a few minutes)
Writes BENCHMARKS.md (``--output``) and prints the same tables.

What is measured (nothing here is estimated or hard-coded):
- A tiny M3EL (the demo's encoder) trained on the generated demo dataset, whose
  KB is grown with synthetic distractor entities (invented names, some shared
  with real entities, drawn emblem images) to each size. Per size, in a fresh
  process: entity-cache build time and bytes per entity, two-stage linking
  through ``nlp.pipe`` (time per mention split into encoder / stage 1 / stage
  2), the exhaustive full-KB ranking, stage-1 recall, Hits@1 of both, peak RSS.
- The bare encoder on the same mentions (image decoding, preprocessing and the
  encoder forward pass, nothing else): the floor for ``nlp.pipe``.
- A CLIP with ViT-B/32's shapes and random weights: ``nlp.pipe`` against its bare
  encoder on a 200-entity KB, and stages 1 and 2 over *synthetic* entity caches
  of 1K-100K entities (random features of the right shapes; ViT-B/32 cannot
  encode 100K entities on 2 CPU cores in a benchmark's time).
- Stage 1 alone over 1M entities (synthetic retrieval matrix).
- Training throughput (examples/s, peak RSS) for several batch sizes.
"""

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def machine() -> str:
    cpu = next(
        (
            l.split(":", 1)[1].strip()
            for l in Path("/proc/cpuinfo").read_text().splitlines()
            if l.startswith("model name")
        ),
        platform.machine(),
    )
    mem = next(
        (
            int(l.split()[1]) / 1024**2
            for l in Path("/proc/meminfo").read_text().splitlines()
            if l.startswith("MemTotal")
        ),
        0,
    )
    import spacy
    import torch
    import transformers

    return (
        f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, Python {platform.python_version()}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), spaCy {spacy.__version__}, transformers {transformers.__version__}"
    )


class Timers:
    """Accumulated seconds per named section."""

    def __init__(self):
        self.seconds: Dict[str, float] = {}

    @contextmanager
    def time(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def wrap(self, obj, attribute: str, name: str) -> None:
        original = getattr(obj, attribute)

        def timed(*args, **kwargs):
            with self.time(name):
                return original(*args, **kwargs)

        setattr(obj, attribute, timed)


def median_run(run: Callable[[], object], repeats: int = 5) -> Tuple[float, object]:
    """Call ``run`` ``repeats`` times: the median wall time in seconds, and that call's result."""
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = run()
        runs.append((time.perf_counter() - start, out))
    runs.sort(key=lambda item: item[0])
    return runs[len(runs) // 2]


# Setup: demo data, tiny encoder, trained pipeline -------------------------------


def train_demo_pipeline(work: Path, steps: int) -> Path:
    """Generate and prepare the demo dataset, train a tiny linker, save it."""
    import spacy
    from thinc.api import fix_random_seed

    from spacy_m3el.datasets.demo import generate_demo_dataset, make_demo_corpus_texts
    from spacy_m3el.datasets.mimic import prepare_dataset
    from spacy_m3el.kb import kb_from_file
    from spacy_m3el.ml.tiny_clip import build_tiny_clip
    from spacy_m3el.readers import read_examples

    generate_demo_dataset(work / "demo")
    prepare_dataset("demo", work / "demo", work / "corpus", work / "corpus" / "kb")
    clip = build_tiny_clip(work / "tiny-clip", corpus=make_demo_corpus_texts(work / "demo"))
    fix_random_seed(0)
    nlp = spacy.blank("en")
    encoder = {"name": str(clip), "text_width": 32, "vision_width": 32, "projection_dim": 32}
    linker = nlp.add_pipe(
        "m3el_linker", config={"model": {"hidden_width": 32, "image_width": 32, "encoder": encoder}}
    )
    linker.set_kb(kb_from_file(work / "corpus" / "kb"))
    examples = read_examples(nlp, work / "corpus" / "train.spacy")
    nlp.initialize(lambda: examples)
    optimizer = nlp.create_optimizer()
    rng = numpy.random.default_rng(0)
    for _ in range(steps):
        batch = [examples[i] for i in rng.choice(len(examples), 32, replace=False)]
        nlp.update(batch, sgd=optimizer)
    nlp.to_disk(work / "pipeline")
    return work / "pipeline"


def test_docs(nlp, path: Path, limit: int = 0):
    """Test mentions as docs with the gold span (KB ID cleared) and the image; plus gold IDs."""
    from spacy_m3el.readers import read_examples

    docs, gold = [], []
    for eg in read_examples(nlp, path):
        for ent in eg.reference.ents:
            doc = nlp.make_doc(eg.reference.text)
            doc.ents = [doc.char_span(ent.start_char, ent.end_char, label=ent.label_)]
            doc._.image = eg.reference._.image
            docs.append(doc)
            gold.append(ent.kb_id_)
    return (docs[:limit], gold[:limit]) if limit else (docs, gold)


# Distractor entities ------------------------------------------------------------


def grow_kb(kb, size: int, seed: int = 1):
    """A copy of ``kb`` grown to ``size`` entities with synthetic distractors.

    Distractor names combine the demo's syllables (a few reuse real names); each
    gets a description from the demo's templates and one of ~400 emblem images.
    """
    from spacy_m3el.datasets.demo import (
        COLOURS,
        ENTITY_TYPES,
        SHAPES,
        Signature,
        draw_signature,
        invent_names,
    )
    from spacy_m3el.kb import MultimodalKB

    rng = numpy.random.default_rng(seed)
    grown = MultimodalKB(kb.vocab, image_root=kb.image_root)
    records = list(kb.records())
    real_names = sorted({r.name for r in records})
    for record in records:
        grown.add_multimodal_entity(record.kb_id, record.name, record.description, record.images)
    stems = invent_names(384, numpy.random.default_rng(seed + 1))
    colours = list(COLOURS)
    images: Dict[tuple, numpy.ndarray] = {}
    for i in range(size - len(records)):
        if rng.random() < 0.02:
            name = real_names[int(rng.integers(len(real_names)))]
        else:
            name = f"{stems[int(rng.integers(len(stems)))]} {stems[int(rng.integers(len(stems)))]}"
        entity_type = ENTITY_TYPES[int(rng.integers(len(ENTITY_TYPES)))]
        key = (
            colours[int(rng.integers(len(colours)))],
            colours[int(rng.integers(len(colours)))],
            SHAPES[int(rng.integers(len(SHAPES)))],
        )
        if key not in images:
            images[key] = numpy.asarray(
                draw_signature(Signature(*key), numpy.random.default_rng(len(images)), size=32)
            )
        description = entity_type.description.format(
            name=name, region="a distant region", year=1900 + i % 120, number=i % 90
        )
        grown.add_multimodal_entity(f"D{i}", name, description, [images[key]])
    grown.add_name_aliases()
    return grown


# One KB size, in its own process -------------------------------------------------


def measure_size(
    pipeline: Path, corpus: Path, size: int, exhaustive_limit: int, max_candidates: str = "pipeline"
) -> Dict[str, float]:
    import spacy
    import torch

    from spacy_m3el.pipeline.entity_cache import retrieval_vectors
    from spacy_m3el.scoring import rank_of_gold

    torch.set_num_threads(2)
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
    from spacy_m3el.pipeline.entity_cache import encode_side

    for precision in ("float16", "float32"):
        stored = encode_side(side, precision)
        result[f"bytes_per_entity_{precision}"] = sum(v.nbytes for v in stored.values()) / len(
            side["has_image"]
        )
    docs, gold = test_docs(nlp, corpus / "test.spacy")
    # Two-stage linking through nlp.pipe, with the stages timed.
    timers = Timers()
    timers.wrap(linker, "_encode_mentions", "encoder")
    timers.wrap(linker, "candidate_rows", "stage1")
    timers.wrap(linker, "_rerank", "stage2")
    list(
        nlp.pipe([d.copy() for d in docs], batch_size=64)
    )  # warm-up: first calls of each kernel are slower
    copies = iter([[d.copy() for d in docs] for _ in range(5)])

    def link_all():
        timers.seconds.clear()
        return list(nlp.pipe(next(copies), batch_size=64)), dict(timers.seconds)

    elapsed, (linked, stage_seconds) = median_run(link_all)
    n = len(docs)
    result.update({"mentions": n, "pipe_ms": 1000 * elapsed / n, "pipe_per_s": n / elapsed})
    for stage in ("encoder", "stage1", "stage2"):
        result[f"{stage}_ms"] = 1000 * stage_seconds.get(stage, 0.0) / n
    result["bare_per_s"] = bare_encoder(nlp, docs)
    predicted = [d.ents[0].kb_id_ for d in linked]
    # Stage-1 recall: the gold among the reranked candidates, and retrieval alone at several k.
    images, _ = linker.load_images(docs)
    spans = [d.ents[0] for d in docs]
    mentions = linker._encode_mentions(spans, images)
    ranked = cache.nearest(retrieval_vectors(mentions, query=True), 50)
    gold_rows = [cache.rows[g] for g in gold]
    for k in (1, 5, 10, 50):
        result[f"retrieval_recall@{k}"] = float(
            numpy.mean([row in r[:k] for row, r in zip(gold_rows, ranked)])
        )
    candidates = linker.candidate_rows(spans, mentions, cache)
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


def bare_encoder(nlp, docs) -> float:
    """Mentions per second of image decoding + preprocessing + encoder forward only."""
    from spacy_m3el.images import get_image, load_image
    from spacy_m3el.ml.model import NetCall
    from spacy_m3el.pipeline.inputs import mention_text

    linker = nlp.get_pipe("m3el_linker")
    encoder = linker.net.encoder
    texts = [mention_text(d.ents[0], linker.max_context_tokens) for d in docs]

    def run(batch_docs, batch_texts):
        images = []
        for d in batch_docs:
            value = get_image(d)
            images.append(load_image(value) if value is not None else None)
        linker.model.predict(
            NetCall(
                "encode", {"role": "mention", "features": encoder.featurize(batch_texts, images)}
            )
        )

    run(docs[:32], texts[:32])

    def encode_all():
        for i in range(0, len(docs), 64):
            run(docs[i : i + 64], texts[i : i + 64])

    return len(docs) / median_run(encode_all)[0]


# ViT-B/32-sized encoder ------------------------------------------------------------


def build_vit_b32(path: Path, corpus_from: Path) -> Path:
    """A CLIP with ViT-B/32's shapes (random weights) and a small BPE vocabulary."""
    import torch
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPTextConfig,
        CLIPTokenizer,
        CLIPVisionConfig,
    )

    from spacy_m3el.datasets.demo import make_demo_corpus_texts
    from spacy_m3el.ml.tiny_clip import write_clip_vocab

    write_clip_vocab(path, make_demo_corpus_texts(corpus_from))
    tokenizer = CLIPTokenizer(str(path / "vocab.json"), str(path / "merges.txt"))
    text = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=512,
        intermediate_size=2048,
        num_hidden_layers=12,
        num_attention_heads=8,
        max_position_embeddings=77,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    vision = CLIPVisionConfig(
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        image_size=224,
        patch_size=32,
    )
    torch.manual_seed(0)
    CLIPModel(
        CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=512)
    ).save_pretrained(path)
    tokenizer.save_pretrained(path)
    CLIPImageProcessor(
        size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}
    ).save_pretrained(path)
    return path


def synthetic_cache(
    kb_ids: List[str], n: int, widths: Dict[str, int], text_len: int, image_len: int, seed: int = 0
):
    """An int8 entity cache of n entities with random features of the network's shapes."""
    from spacy_m3el.pipeline.entity_cache import EntityCache

    rng = numpy.random.default_rng(seed)
    ids = list(kb_ids) + [f"S{i}" for i in range(n - len(kb_ids))]
    stored = {"has_image": (rng.random(n) > 0.05).astype("uint8")}
    for key, width in widths.items():
        shape = (
            (n, text_len if key == "text.q" else image_len, width)
            if key.endswith(".q")
            else (n, width)
        )
        stored[f"{key}:int8"] = rng.integers(-127, 128, shape, dtype=numpy.int8)
        stored[f"{key}:scale"] = numpy.full(shape[:-1] + (1,), 0.01, dtype="float16")
    for key, length in (("text.mask", text_len), ("image.mask", image_len)):
        stored[f"{key}:len"] = numpy.full(n, length, dtype="int32")
        stored[f"{key}:width"] = numpy.array([length], dtype="int32")
    return EntityCache(ids, stored, "int8", "synthetic", "synthetic")


def measure_vit(work: Path, corpus: Path, sizes: List[int]) -> Dict[str, object]:
    import spacy
    import torch
    from thinc.api import fix_random_seed

    torch.set_num_threads(2)
    work, corpus = Path(work), Path(corpus)
    clip = build_vit_b32(work / "vit-b32", work / "demo")
    fix_random_seed(0)
    nlp = spacy.blank("en")
    linker = nlp.add_pipe("m3el_linker", config={"model": {"encoder": {"name": str(clip)}}})
    from spacy_m3el.kb import kb_from_file

    full = kb_from_file(corpus / "kb")(nlp.vocab)
    small = grow_kb(full, 200)
    linker.set_kb(lambda vocab: small)
    nlp.initialize()
    docs, _ = test_docs(nlp, corpus / "test.spacy", limit=96)
    start = time.perf_counter()
    linker.entity_cache
    result: Dict[str, object] = {"cache_build_200_s": time.perf_counter() - start}
    list(nlp.pipe([d.copy() for d in docs[:8]], batch_size=32))
    copies = iter([[d.copy() for d in docs] for _ in range(3)])
    result["pipe_per_s"] = (
        len(docs) / median_run(lambda: list(nlp.pipe(next(copies), batch_size=32)), repeats=3)[0]
    )
    result["bare_per_s"] = bare_encoder(nlp, docs)
    widths = {
        "text.g": 512,
        "text.q": 96,
        "text.c": 96,
        "image.g": 96,
        "image.q": 96,
        "image.c": 96,
        "cross.t2v": 96,
        "cross.v2t": 96,
    }
    stages = {}
    spans = [d.ents[0] for d in docs]
    images, _ = linker.load_images(docs)
    mentions = linker._encode_mentions(spans, images)
    for size in sizes:
        cache = synthetic_cache(small.entity_ids, size, widths, text_len=40, image_len=50)
        stage1, rows = median_run(lambda: linker.candidate_rows(spans, mentions, cache), repeats=3)
        stage2, _ = median_run(lambda: linker._rerank(mentions, cache, rows), repeats=3)
        stages[size] = {
            "stage1_ms": 1000 * stage1 / len(docs),
            "stage2_ms": 1000 * stage2 / len(docs),
            "bytes_per_entity": cache.bytes_per_entity,
        }
        del cache
    result["stages"] = stages
    result["peak_rss_mib"] = peak_rss_mib()
    return result


def measure_stage1_million(n: int = 1_000_000) -> Dict[str, float]:
    import torch

    from spacy_m3el.pipeline.retrieval import RetrievalMatrix

    torch.set_num_threads(2)
    out = {}
    for name, width in (("tiny", 128), ("vit_b32", 800)):
        rng = numpy.random.default_rng(0)
        matrix = RetrievalMatrix.from_chunks(
            rng.standard_normal((min(65536, n - start), width), dtype=numpy.float32)
            for start in range(0, n, 65536)
        )
        queries = numpy.random.default_rng(1).standard_normal((64, width), dtype=numpy.float32)
        matrix.nearest(queries[:8], 10)
        elapsed, _ = median_run(lambda: matrix.nearest(queries, 10), repeats=3)
        out[f"{name}_ms_per_mention"] = 1000 * elapsed / 64
        out[f"{name}_matrix_mib"] = matrix.nbytes / 2**20
        out[f"{name}_entities"] = len(matrix)
        out[f"{name}_width"] = width
        del matrix
    out["peak_rss_mib"] = peak_rss_mib()
    return out


def measure_training(pipeline: Path, corpus: Path) -> Dict[int, Dict[str, float]]:
    import spacy
    import torch

    from spacy_m3el.readers import read_examples

    torch.set_num_threads(2)
    pipeline, corpus = Path(pipeline), Path(corpus)
    nlp = spacy.load(pipeline)
    examples = read_examples(nlp, corpus / "train.spacy")
    optimizer = nlp.create_optimizer()
    out = {}
    for size in (8, 32, 128):
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


# Driver -------------------------------------------------------------------------------


def in_subprocess(function: str, *args) -> object:
    """Run ``function(*args)`` of this module in a fresh interpreter (for per-task peak RSS)."""
    code = f"import json, sys; sys.path.insert(0, {str(ROOT / 'bench')!r}); import scale; print(json.dumps(scale.{function}(*{args!r})))"
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"{function} failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


IVF_HEADING = "## Approximate index (IVF) vs exhaustive stage 1"  # written by approximate_index.py


def section(text: str, heading: str) -> Optional[str]:
    """The Markdown section under the level-2 ``heading`` (up to the next one), if present."""
    match = re.search(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", text, flags=re.S | re.M)
    return match.group(0).rstrip("\n") + "\n" if match else None


def write_section(path: Path, heading: str, body: str) -> None:
    """Replace the section ``heading`` of the Markdown file at ``path``, or append it."""
    text = path.read_text(encoding="utf8") if path.exists() else "# Benchmarks\n"
    old = section(text, heading)
    block = f"{heading}\n\n{body.strip()}\n"
    text = text.replace(old, block) if old else f"{text.rstrip()}\n\n{block}"
    path.write_text(text, encoding="utf8")


def report(results: Dict[str, object], command: str) -> str:
    sizes = results["sizes"]
    lines = [
        "# Benchmarks",
        "",
        f"Machine: {results['machine']}",
        f"Date: {results['date']}",
        f"Command: `{command}` ({results['wall_s'] / 60:.1f} min)",
        "",
    ]
    lines += [
        "## Tiny encoder (trained on the demo), KB grown with distractors",
        "",
        f"Two-stage = the KB's alias candidates + top-{sizes[0]['top_k']} retrieval, at most {sizes[0]['max_candidates']} of them (by retrieval score) reranked with the full score, through `nlp.pipe`; "
        "stage 1 includes the alias lookup. Exhaustive = every mention against every entity (the papers' protocol). "
        "Candidates = mean reranked per mention (before the cap). Same top-1 = share of mentions where two-stage and exhaustive pick the same entity.",
        "",
        "| entities | cache build s | cache B/entity (int8 / fp16 / fp32) | two-stage ms/mention (encoder / stage 1 / stage 2) | mentions/s (bare encoder) | candidates | exhaustive ms/mention | speed-up | retrieval recall@1/5/10/50 | stage-1 recall | exhaustive top-1 in stage 1 | Hits@1 two-stage / exhaustive (same mentions) | same top-1 | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sizes:
        lines.append(
            f"| {r['size']:,} | {r['cache_build_s']:.1f} | {r['bytes_per_entity_int8']:.0f} / {r['bytes_per_entity_float16']:.0f} / {r['bytes_per_entity_float32']:.0f} | "
            f"{r['pipe_ms']:.2f} ({r['encoder_ms']:.2f} / {r['stage1_ms']:.2f} / {r['stage2_ms']:.2f}) | {r['pipe_per_s']:.0f} ({r['bare_per_s']:.0f}) | {r['candidates']:.1f} ({r['candidates_uncapped']:.1f}) | {r['exhaustive_ms']:.1f} (n={r['exhaustive_mentions']}) | "
            f"{r['exhaustive_ms'] / r['pipe_ms']:.0f}x | {r['retrieval_recall@1']:.2f} / {r['retrieval_recall@5']:.2f} / {r['retrieval_recall@10']:.2f} / {r['retrieval_recall@50']:.2f} | "
            f"{r['stage1_recall']:.3f} | {r['exhaustive_top1_in_stage1']:.3f} | {100 * r['hits1_two_stage_same']:.2f} / {100 * r['hits1_exhaustive']:.2f} | {r['same_top1']:.3f} | {r['peak_rss_mib']:.0f} |"
        )
    lines += [
        "",
        "Bare encoder = image decoding, preprocessing and the encoder's forward pass on the same mentions, in the same process: the floor for `nlp.pipe`.",
        "",
    ]
    vit = results.get("vit")
    if vit:
        lines += [
            "## CLIP with ViT-B/32 shapes (random weights)",
            "",
            f"`nlp.pipe` {vit['pipe_per_s']:.1f} mentions/s vs bare encoder {vit['bare_per_s']:.1f} mentions/s on a 200-entity KB (cache build {vit['cache_build_200_s']:.1f} s); peak RSS {vit['peak_rss_mib']:.0f} MiB.",
            "",
            "Stages over **synthetic** int8 entity caches (random features of the real shapes):",
            "",
            "| entities | stage 1 ms/mention | stage 2 ms/mention | cache B/entity |",
            "|---|---|---|---|",
        ]
        for size, s in vit["stages"].items():
            lines.append(
                f"| {int(size):,} | {s['stage1_ms']:.3f} | {s['stage2_ms']:.3f} | {s['bytes_per_entity']:.0f} |"
            )
        lines.append("")
    million = results.get("million")
    if million:
        lines += [
            "## Stage 1 over 1M entities (synthetic retrieval matrix, batches of 64 mentions)",
            "",
            f"Exhaustive int8 search with float32 rescoring of the shortlist. Tiny widths ({million['tiny_width']}): {million['tiny_ms_per_mention']:.2f} ms/mention ({million['tiny_matrix_mib']:.0f} MiB int8 matrix); ViT-B/32 widths ({million['vit_b32_width']}): {million['vit_b32_ms_per_mention']:.2f} ms/mention ({million['vit_b32_matrix_mib']:.0f} MiB); peak RSS {million['peak_rss_mib']:.0f} MiB.",
            "",
        ]
    lines += [
        "## Training throughput (tiny encoder; no step re-encodes the KB)",
        "",
        "| batch | examples/s | peak RSS MiB |",
        "|---|---|---|",
    ]
    for size, t in results["training"].items():
        lines.append(f"| {size} | {t['examples_per_s']:.0f} | {t['peak_rss_mib']:.0f} |")
    lines += ["", "## Targets", "", "| target | measured | |", "|---|---|---|"]
    for name, measured, ok in results["targets"]:
        lines.append(f"| {name} | {measured} | {'PASS' if ok else 'MISS'} |")
    return "\n".join(lines) + "\n"


def targets(results: Dict[str, object]) -> List[tuple]:
    by_size = {r["size"]: r for r in results["sizes"]}
    small, large = by_size[min(by_size)], by_size[max(by_size)]
    out = [
        (
            f"two-stage >= 50x faster than exhaustive at {large['size']:,}",
            f"{large['exhaustive_ms'] / large['pipe_ms']:.0f}x",
            large["exhaustive_ms"] / large["pipe_ms"] >= 50,
        ),
        (
            f"Hits@1 within 0.5 points of exhaustive at {large['size']:,}",
            f"{100 * (large['hits1_two_stage_same'] - large['hits1_exhaustive']):+.2f} points",
            abs(large["hits1_two_stage_same"] - large["hits1_exhaustive"]) <= 0.005,
        ),
        (
            f"time per mention at {large['size']:,} <= 2x at {small['size']:,}",
            f"{large['pipe_ms'] / small['pipe_ms']:.2f}x",
            large["pipe_ms"] <= 2 * small["pipe_ms"],
        ),
        (
            f"nlp.pipe >= 70% of the bare encoder (tiny, {small['size']:,} entities)",
            f"{100 * small['pipe_per_s'] / small['bare_per_s']:.0f}%",
            small["pipe_per_s"] >= 0.7 * small["bare_per_s"],
        ),
        (
            "cache <= 10 KB per entity (tiny, int8)",
            f"{large['bytes_per_entity_int8']:.0f} B",
            large["bytes_per_entity_int8"] <= 10_000,
        ),
    ]
    vit = results.get("vit")
    if vit:
        out.append(
            (
                "nlp.pipe >= 70% of the bare encoder (ViT-B/32)",
                f"{100 * vit['pipe_per_s'] / vit['bare_per_s']:.0f}%",
                vit["pipe_per_s"] >= 0.7 * vit["bare_per_s"],
            )
        )
        largest = vit["stages"][max(vit["stages"], key=int)]
        out.append(
            (
                "cache <= 10 KB per entity (ViT-B/32 shapes, int8)",
                f"{largest['bytes_per_entity']:.0f} B",
                largest["bytes_per_entity"] <= 10_000,
            )
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description="spacy-m3el scale benchmarks")
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument(
        "--quick", action="store_true", help="1K and 10K only, no ViT-B/32 and no 1M"
    )
    parser.add_argument("--steps", type=int, default=300, help="training steps of the tiny linker")
    parser.add_argument(
        "--exhaustive-limit",
        type=int,
        default=216,
        help="mentions ranked exhaustively per size (at most 108 at 100K and above)",
    )
    parser.add_argument(
        "--max-candidates",
        default="pipeline",
        help="override the linker's max_candidates (a number, or 'none' for no limit)",
    )
    parser.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    sizes = [1000, 10000] if args.quick else [int(s) for s in args.sizes.split(",")]
    start = time.perf_counter()
    work = args.work or Path(tempfile.mkdtemp(prefix="m3el-bench-"))
    print(f"working in {work}", flush=True)
    pipeline = work / "pipeline"
    if not pipeline.exists():
        train_demo_pipeline(work, args.steps)
    corpus = work / "corpus"
    results: Dict[str, object] = {"machine": machine(), "date": time.strftime("%Y-%m-%d")}
    results["sizes"] = []
    for size in sizes:
        limit = args.exhaustive_limit if size < 100_000 else min(args.exhaustive_limit, 108)
        print(f"KB of {size:,} entities ...", flush=True)
        results["sizes"].append(
            in_subprocess(
                "measure_size", str(pipeline), str(corpus), size, limit, args.max_candidates
            )
        )
        print(json.dumps(results["sizes"][-1]), flush=True)
    print("training throughput ...", flush=True)
    results["training"] = in_subprocess("measure_training", str(pipeline), str(corpus))
    if not args.quick:
        print("ViT-B/32-sized encoder ...", flush=True)
        results["vit"] = in_subprocess("measure_vit", str(work), str(corpus), sizes)
        print("stage 1 at 1M ...", flush=True)
        results["million"] = in_subprocess("measure_stage1_million")
    results["targets"] = targets(results)
    results["wall_s"] = time.perf_counter() - start
    command = " ".join(["python bench/scale.py", *sys.argv[1:]])
    text = report(results, command)
    print(text)
    kept = (
        section(args.output.read_text(encoding="utf8"), IVF_HEADING)
        if args.output.exists()
        else None
    )
    args.output.write_text(f"{text.rstrip()}\n\n{kept}" if kept else text, encoding="utf8")
    (args.output.with_suffix(".json")).write_text(
        json.dumps(results, indent=1, default=str), encoding="utf8"
    )


if __name__ == "__main__":
    main()
