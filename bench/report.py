"""The Markdown report of ``bench.scale`` (BENCHMARKS.md) and its pass/miss targets."""

from typing import Dict, List

SIZES_HEADER = (
    "| entities | cache build s | cache B/entity (int8 / fp16 / fp32) "
    "| two-stage ms/mention (encoder / stage 1 / stage 2) | mentions/s (bare encoder) "
    "| candidates | exhaustive ms/mention | speed-up | retrieval recall@1/5/10/50 "
    "| stage-1 recall | exhaustive top-1 in stage 1 "
    "| Hits@1 two-stage / exhaustive (same mentions) | same top-1 | peak RSS MiB |"
)


def size_row(r: Dict[str, float]) -> str:
    """One row of the tiny encoder's table (one KB size)."""
    cells = [
        f"{r['size']:,}",
        f"{r['cache_build_s']:.1f}",
        f"{r['bytes_per_entity_int8']:.0f} / {r['bytes_per_entity_float16']:.0f}"
        f" / {r['bytes_per_entity_float32']:.0f}",
        f"{r['pipe_ms']:.2f} ({r['encoder_ms']:.2f} / {r['stage1_ms']:.2f} / {r['stage2_ms']:.2f})",
        f"{r['pipe_per_s']:.0f} ({r['bare_per_s']:.0f})",
        f"{r['candidates']:.1f} ({r['candidates_uncapped']:.1f})",
        f"{r['exhaustive_ms']:.1f} (n={r['exhaustive_mentions']})",
        f"{r['exhaustive_ms'] / r['pipe_ms']:.0f}x",
        " / ".join(f"{r[f'retrieval_recall@{k}']:.2f}" for k in (1, 5, 10, 50)),
        f"{r['stage1_recall']:.3f}",
        f"{r['exhaustive_top1_in_stage1']:.3f}",
        f"{100 * r['hits1_two_stage_same']:.2f} / {100 * r['hits1_exhaustive']:.2f}",
        f"{r['same_top1']:.3f}",
        f"{r['peak_rss_mib']:.0f}",
    ]
    return "| " + " | ".join(cells) + " |"


def report(results: Dict[str, object], command: str) -> str:
    """BENCHMARKS.md: the machine, the tables of every part that ran, the targets."""
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
        f"Two-stage = the KB's alias candidates + top-{sizes[0]['top_k']} retrieval, "
        f"at most {sizes[0]['max_candidates']} of them (by retrieval score) reranked with the "
        "full score, through `nlp.pipe`; stage 1 includes the alias lookup. "
        "Exhaustive = every mention against every entity (the papers' protocol). "
        "Candidates = mean reranked per mention (before the cap). Same top-1 = share of "
        "mentions where two-stage and exhaustive pick the same entity.",
        "",
        SIZES_HEADER,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [size_row(r) for r in sizes]
    lines += [
        "",
        "Bare encoder = image decoding, preprocessing and the encoder's forward pass on the "
        "same mentions, in the same process: the floor for `nlp.pipe`.",
        "",
    ]
    vit = results.get("vit")
    if vit:
        lines += [
            "## CLIP with ViT-B/32 shapes (random weights)",
            "",
            f"`nlp.pipe` {vit['pipe_per_s']:.1f} mentions/s vs bare encoder "
            f"{vit['bare_per_s']:.1f} mentions/s on a {vit.get('kb_size', 200)}-entity KB "
            f"(cache build {vit['cache_build_200_s']:.1f} s); "
            f"peak RSS {vit['peak_rss_mib']:.0f} MiB.",
            "",
            "Stages over **synthetic** int8 entity caches (random features of the real shapes):",
            "",
            "| entities | stage 1 ms/mention | stage 2 ms/mention | cache B/entity |",
            "|---|---|---|---|",
        ]
        for size, s in vit["stages"].items():
            lines.append(
                f"| {int(size):,} | {s['stage1_ms']:.3f} | {s['stage2_ms']:.3f} "
                f"| {s['bytes_per_entity']:.0f} |"
            )
        lines.append("")
    million = results.get("million")
    if million:
        lines += [
            "## Stage 1 over 1M entities (synthetic retrieval matrix, batches of 64 mentions)",
            "",
            "Exhaustive int8 search with float32 rescoring of the shortlist. "
            f"Tiny widths ({million['tiny_width']}): "
            f"{million['tiny_ms_per_mention']:.2f} ms/mention "
            f"({million['tiny_matrix_mib']:.0f} MiB int8 matrix); "
            f"ViT-B/32 widths ({million['vit_b32_width']}): "
            f"{million['vit_b32_ms_per_mention']:.2f} ms/mention "
            f"({million['vit_b32_matrix_mib']:.0f} MiB); "
            f"peak RSS {million['peak_rss_mib']:.0f} MiB.",
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
    """(target, measured, passed) for the speed, quality and memory targets."""
    by_size = {r["size"]: r for r in results["sizes"]}
    small, large = by_size[min(by_size)], by_size[max(by_size)]
    speed_up = large["exhaustive_ms"] / large["pipe_ms"]
    hits_gap = large["hits1_two_stage_same"] - large["hits1_exhaustive"]
    out = [
        (
            f"two-stage >= 50x faster than exhaustive at {large['size']:,}",
            f"{speed_up:.0f}x",
            speed_up >= 50,
        ),
        (
            f"Hits@1 within 0.5 points of exhaustive at {large['size']:,}",
            f"{100 * hits_gap:+.2f} points",
            abs(hits_gap) <= 0.005,
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
