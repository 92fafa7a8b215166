"""OT-MEL against attention: the cost of Sinkhorn, and the systems' speed side by side.

Run from the repository root, after the systems suite has trained its pipelines
(``python -m spacy_m3el experiments --suite systems ...``, see docs/otmel.md):
      python -m bench.otmel --pipeline "M3EL (attention)=path/to/model-best" ...
      python -m bench.otmel --alignment-only          (the per-call table alone)
Prints the tables and writes them to the "OT-MEL" section of BENCHMARKS.md (``--output``).

What is measured (nothing here is estimated or hard-coded):
- One alignment call (the mention-entity token matching of 16 mentions x 16
  candidates) with attention, the OT teacher (log-domain Sinkhorn, 3
  iterations, eps 0.05) and the distilled student, at the tiny demo's shapes
  and at ViT-B/32's (40 text tokens, 50 patches, width 96): forward without
  gradients (prediction) and forward + backward (training), median ms per call.
- Per trained pipeline: training examples/s of ``nlp.update`` (batches of 32
  from the training set, after one warm-up batch), and linking ms per mention
  over entity caches of 1K and 100K entities (synthetic features in the
  pipeline's own cache layout, as in ``bench.vit``; the mentions are the real
  test mentions): encoder, stage 1 and stage 2.
"""

import argparse
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy

from .common import (
    Timer,
    command_line,
    int_list,
    machine,
    median_run,
    mention_docs,
    publish,
)
from .vit import stage1, stage2, synthetic_cache

HEADING = "## OT-MEL: Sinkhorn against attention, and the systems' speed"
SHAPES = {
    "demo (L=K=20, h=32)": (20, 20, 32),
    "ViT-B/32 (L=40, K=50, h=96)": (40, 50, 96),
}
PAIRS = (16, 16)  # mentions x candidates, stage 2's shape


def alignments(width: int) -> Dict[str, object]:
    from spacy_m3el.ml.layers import AttentionAlignment
    from spacy_m3el.ml.transport import OTAlignment, OTSettings

    return {
        "attention": AttentionAlignment(width),
        "OT (Sinkhorn, 3 it.)": OTAlignment(width, OTSettings()),
        "OT student": OTAlignment(
            width, OTSettings(distillation_weight=0.5, predict_with="student")
        ),
    }


def time_alignment(
    module, inputs: tuple, repeats: int, train: bool
) -> Tuple[float, Optional[float]]:
    """Median ms of one call without gradients and (if train) of forward + backward."""
    import torch

    query, rest = inputs[0], inputs[1:]

    def predict():
        with torch.no_grad():
            return module(query, *rest)

    def update():
        module(query.clone().requires_grad_(True), *rest).sum().backward()

    module.eval()
    predict_s, _ = median_run(predict, repeats)
    module.train()
    train_s = median_run(update, repeats)[0] if train else None
    return 1000 * predict_s, None if train_s is None else 1000 * train_s


def measure_alignment(repeats: int = 7) -> List[Dict[str, object]]:
    """Median ms per call of each alignment, predicting and training, per shape."""
    import torch

    rows = []
    n, c = PAIRS
    for shape, (length, keys, width) in SHAPES.items():
        generator = torch.Generator().manual_seed(0)
        query = torch.randn(n, c, length, width, generator=generator)
        key = torch.randn(n, 1, keys, width, generator=generator)
        key_mask = torch.ones(n, 1, keys, dtype=torch.bool)
        query_mask = torch.ones(n, c, length, dtype=torch.bool)
        inputs = (query, key, key, key_mask, query_mask)
        for name, module in alignments(width).items():
            # The student only predicts; in training the teacher runs (and teaches it).
            predict_ms, train_ms = time_alignment(module, inputs, repeats, name != "OT student")
            rows.append(
                {"shape": shape, "alignment": name, "predict_ms": predict_ms, "train_ms": train_ms}
            )
    return rows


def training_speed(nlp, examples, batch_size: int = 32, batches: int = 4) -> float:
    """Examples per second of ``nlp.update`` over ``batches`` batches after one warm-up."""
    optimizer = nlp.create_optimizer()
    rng = numpy.random.default_rng(0)
    chosen = [
        [examples[i] for i in rng.choice(len(examples), batch_size, replace=False)]
        for _ in range(batches + 1)
    ]
    nlp.update(chosen[0], sgd=optimizer)
    start = time.perf_counter()
    for batch in chosen[1:]:
        nlp.update(batch, sgd=optimizer)
    return batches * batch_size / (time.perf_counter() - start)


def linking_speed(linker, docs: list, sizes: List[int]) -> Dict[int, Dict[str, float]]:
    """ms per mention of the encoder, stage 1 and stage 2 over synthetic caches of each size."""
    spans = [doc.ents[0] for doc in docs]
    images, _ = linker.load_images(docs)
    template = linker.entity_cache
    out = {}
    for size in sizes:
        cache = synthetic_cache(template, size)
        timer = Timer()
        for start in range(0, len(docs), 64):
            batch_spans, batch_images = spans[start : start + 64], images[start : start + 64]
            with timer("encoder"):
                mentions = linker.encode_mentions(batch_spans, batch_images)
            with timer("stage1"):
                rows = stage1(linker, cache, batch_spans, mentions)
            with timer("stage2"):
                stage2(linker, cache, mentions, rows)
        out[size] = {key: 1000 * value / len(docs) for key, value in timer.seconds.items()}
    return out


def measure_pipeline(
    path: Path, corpus: Path, sizes: List[int], limit: int, batch_size: int = 32
) -> Dict[str, object]:
    import spacy

    from spacy_m3el.readers import read_examples

    nlp = spacy.load(path)
    linker = nlp.get_pipe("m3el_linker")
    docs, _ = mention_docs(nlp, corpus / "test.spacy", limit)
    result: Dict[str, object] = {"linking": linking_speed(linker, docs, sizes)}
    examples = read_examples(nlp, corpus / "train.spacy")
    result["train_examples_per_s"] = training_speed(nlp, examples, batch_size)
    return result


def _ms(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.2f}"


def report(
    alignment_rows: List[Dict[str, object]], pipelines: Dict[str, Dict[str, object]], command: str
) -> str:
    lines = [f"Machine: {machine()}. Command: `{command}`.", ""]
    lines += [
        f"One alignment call, {PAIRS[0]} mentions x {PAIRS[1]} candidates (median ms):",
        "",
        "| shapes | alignment | predict (no grad) | train (fwd + bwd) |",
        "|---|---|---:|---:|",
    ]
    for row in alignment_rows:
        lines.append(
            f"| {row['shape']} | {row['alignment']} | {_ms(row['predict_ms'])} "
            f"| {_ms(row['train_ms'])} |"
        )
    if pipelines:
        sizes = sorted({size for p in pipelines.values() for size in p["linking"]})
        header = " | ".join(f"link ms/mention at {size:,}" for size in sizes)
        lines += [
            "",
            "Trained pipelines (linking: encoder + stage 1 + stage 2 per mention):",
            "",
            f"| system | train examples/s | {header} |",
            "|---|---:|" + "---:|" * len(sizes),
        ]
        for name, result in pipelines.items():
            cells = " | ".join(f"{sum(result['linking'][size].values()):.2f}" for size in sizes)
            lines.append(f"| {name} | {result['train_examples_per_s']:.1f} | {cells} |")
    return "\n".join(lines) + "\n"


def parse_pipeline(text: str) -> Tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    return name, Path(path)


def main(argv: Optional[List[str]] = None) -> str:
    import torch

    parser = argparse.ArgumentParser(prog="python -m bench.otmel", description=__doc__)
    parser.add_argument("--pipeline", type=parse_pipeline, action="append", default=[])
    parser.add_argument("--corpus", type=Path, default=Path("corpus/demo-hard"))
    parser.add_argument("--sizes", type=int_list, default=[1000, 100_000])
    parser.add_argument("--mentions", type=int, default=0, help="Test mentions (0: all).")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--train-batch-size", type=int, default=32)
    parser.add_argument("--alignment-only", action="store_true")
    parser.add_argument("--output", type=Path, default=None, help="Markdown file to update.")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    alignment_rows = measure_alignment(args.repeats)
    pipelines = {}
    if not args.alignment_only:
        for name, path in args.pipeline:
            pipelines[name] = measure_pipeline(
                path, args.corpus, args.sizes, args.mentions, args.train_batch_size
            )
    command = command_line("bench.otmel", argv)
    text = report(alignment_rows, pipelines, command.strip())
    return publish(text, args.output, HEADING)


if __name__ == "__main__":
    main()
