"""Measurements at ViT-B/32 scale: a random-weight CLIP of its shapes, stage 1 over 1M entities.

ViT-B/32 cannot encode 100K entities on 2 CPU cores in a benchmark's time,
so stages 1 and 2 run over *synthetic* entity caches: random int8 features
with the layout (keys, dtypes, widths) of the real cache of a small KB. The
linker's stage methods use only its own cache, so the synthetic caches go
through the functions behind them (checked against the methods first).
"""

import time
from functools import partial
from pathlib import Path
from typing import Dict, List, Tuple

import numpy

from .common import grow_kb, median_run, mention_docs, peak_rss_mib, tiny_model_config
from .tiny import bare_encoder

ENCODERS = ("b32", "tiny")  # "tiny": the demo's encoder, for smoke runs of the same code


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


def linker_config(work: Path, encoder: str) -> Dict[str, object]:
    """The m3el_linker config of the ViT-B/32-shaped model (or, for smoke runs, the tiny one)."""
    from spacy_m3el.datasets.demo import make_demo_corpus_texts
    from spacy_m3el.ml.tiny_clip import build_tiny_clip

    if encoder == "b32":
        return {"model": {"encoder": {"name": str(build_vit_b32(work / "vit-b32", work / "demo"))}}}
    if encoder == "tiny":
        corpus = make_demo_corpus_texts(work / "demo")
        return tiny_model_config(build_tiny_clip(work / "vit-tiny", corpus=corpus))
    raise ValueError(f"encoder must be one of {ENCODERS}, got {encoder!r}")


def synthetic_cache(template, n: int, seed: int = 0):
    """An int8 entity cache of n entities with random features laid out as ``template``'s.

    template (EntityCache): A real int8 cache; its KB IDs come first (so the
        KB's alias candidates have rows), its fingerprints and retrieval spec
        are kept, and every stored array gets n rows of its shape and dtype.
        Token masks are full (every token position real).
    """
    from spacy_m3el.pipeline.entity_cache import EntityCache

    if template.precision != "int8":
        raise ValueError(f"the template cache must be int8, not {template.precision}")
    rng = numpy.random.default_rng(seed)
    ids = list(template.kb_ids) + [f"S{i}" for i in range(n - len(template))]
    stored = {}
    for name, value in template.stored.items():
        key, _, part = name.partition(":")
        shape = (n,) + value.shape[1:]
        if part == "int8":
            stored[name] = rng.integers(-127, 128, shape, dtype=numpy.int8)
        elif part == "scale":
            stored[name] = numpy.full(shape, 0.01, dtype=value.dtype)
        elif part == "width":
            stored[name] = value.copy()
        elif part == "len":
            width = int(template.stored[f"{key}:width"][0])
            stored[name] = numpy.full(n, width, dtype=value.dtype)
        else:  # a per-item flag: whether the entity has an image
            stored[name] = (rng.random(n) > 0.05).astype(value.dtype)
    return EntityCache(
        ids,
        stored,
        "int8",
        template.model_fingerprint,
        template.kb_fingerprint,
        template.retrieval_spec,
    )


def stage1(linker, cache, spans, mentions) -> List[List[int]]:
    """Stage 1 over ``cache`` instead of the linker's own."""
    return linker.retrieve(spans, mentions, cache=cache)


def stage2(linker, cache, mentions, rows: List[List[int]]) -> list:
    """Stage 2 over ``cache`` instead of the linker's own."""
    return linker.rerank(mentions, rows, cache=cache)


def measure_vit(
    work: str,
    corpus: str,
    sizes: List[int],
    encoder: str = "b32",
    kb_size: int = 200,
    mentions: int = 96,
    repeats: int = 3,
) -> Dict[str, object]:
    """``nlp.pipe`` against the bare encoder on a small KB; stages 1 and 2 over synthetic caches."""
    import spacy
    from thinc.api import fix_random_seed

    from spacy_m3el.kb import kb_from_file

    work, corpus = Path(work), Path(corpus)
    config = linker_config(work, encoder)
    fix_random_seed(0)
    nlp = spacy.blank("en")
    linker = nlp.add_pipe("m3el_linker", config=config)
    small = grow_kb(kb_from_file(corpus / "kb")(nlp.vocab), kb_size)
    linker.set_kb(lambda vocab: small)
    nlp.initialize()
    docs, _ = mention_docs(nlp, corpus / "test.spacy", limit=mentions)
    start = time.perf_counter()
    real_cache = linker.entity_cache
    result: Dict[str, object] = {
        "encoder": encoder,
        "kb_size": len(real_cache),
        "cache_build_200_s": time.perf_counter() - start,
    }
    list(nlp.pipe([d.copy() for d in docs[:8]], batch_size=32))
    copies = iter([[d.copy() for d in docs] for _ in range(repeats)])
    elapsed, _ = median_run(lambda: list(nlp.pipe(next(copies), batch_size=32)), repeats)
    result["pipe_per_s"] = len(docs) / elapsed
    result["bare_per_s"] = bare_encoder(nlp, docs, repeats)
    stages = {}
    spans = [d.ents[0] for d in docs]
    images, _ = linker.load_images(docs)
    encoded = linker.encode_mentions(spans, images)
    for size in sizes:
        cache = synthetic_cache(real_cache, size)
        seconds1, rows = median_run(partial(stage1, linker, cache, spans, encoded), repeats)
        seconds2, _ = median_run(partial(stage2, linker, cache, encoded, rows), repeats)
        stages[size] = {
            "stage1_ms": 1000 * seconds1 / len(docs),
            "stage2_ms": 1000 * seconds2 / len(docs),
            "bytes_per_entity": cache.bytes_per_entity,
        }
        del cache
    result["stages"] = stages
    result["peak_rss_mib"] = peak_rss_mib()
    return result


def measure_stage1_million(n: int = 1_000_000, repeats: int = 3) -> Dict[str, float]:
    """Stage 1 alone (exhaustive int8 search + rescoring) over n random retrieval vectors."""

    from spacy_m3el.pipeline.retrieval import RetrievalMatrix

    out: Dict[str, float] = {}
    widths: Tuple[Tuple[str, int], ...] = (("tiny", 128), ("vit_b32", 800))
    for name, width in widths:
        rng = numpy.random.default_rng(0)
        matrix = RetrievalMatrix.from_chunks(
            rng.standard_normal((min(65536, n - start), width), dtype=numpy.float32)
            for start in range(0, n, 65536)
        )
        queries = numpy.random.default_rng(1).standard_normal((64, width), dtype=numpy.float32)
        matrix.nearest(queries[:8], 10)
        elapsed, _ = median_run(partial(matrix.nearest, queries, 10), repeats)
        out[f"{name}_ms_per_mention"] = 1000 * elapsed / 64
        out[f"{name}_matrix_mib"] = matrix.nbytes / 2**20
        out[f"{name}_entities"] = len(matrix)
        out[f"{name}_width"] = width
        del matrix
    out["peak_rss_mib"] = peak_rss_mib()
    return out
