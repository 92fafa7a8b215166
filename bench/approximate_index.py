"""Does an approximate index (IVF) pay for stage 1 at 100K entities?

Run from the repository root:
      python -m bench.approximate_index [--work DIR] [--size 100000]

Stage 1 of linking scores every entity of the cache's retrieval matrix (int8
matrix products per batch of mentions, then the shortlist rescored in
float32; ``spacy_m3el.pipeline.retrieval``). This benchmark measures it
against the same exhaustive search in float32 and against what an approximate
nearest-neighbour library would do: an inverted file (k-means lists; each
query scores the vectors of its ``nprobe`` nearest lists), implemented with
the same torch primitives, on the retrieval vectors of the tiny demo model
over a KB grown to ``--size`` entities. It prints the time per mention and
the recall@10 against the float32 top-10 for several list and probe counts,
and replaces the IVF section of BENCHMARKS.md (``--output``; a run smaller
than the real one writes into the work folder instead).
The linker ships the exhaustive int8 search because, on the machines in
BENCHMARKS.md, no IVF setting was both faster and as accurate.
"""

import argparse
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy

from .common import (
    IVF_HEADING,
    grow_kb,
    int_list,
    machine,
    mention_docs,
    output_path,
    train_demo_pipeline,
    write_section,
)

COMMAND = "python -m bench.approximate_index"
# The real run's settings; a run with others writes into the work folder unless --output is given.
DEFAULTS = {
    "size": 100_000,
    "lists": [256, 1024],
    "probes": [4, 8, 16, 32],
    "steps": 300,
    "threads": 2,
}


def kmeans(vectors, n_lists: int, iterations: int = 10, sample: int = 65536, seed: int = 0):
    """Centroids from Lloyd's k-means on a sample of the vectors."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    if vectors.shape[0] > sample:
        vectors = vectors[torch.randperm(vectors.shape[0], generator=generator)[:sample]]
    centroids = vectors[torch.randperm(vectors.shape[0], generator=generator)[:n_lists]].clone()
    for _ in range(iterations):
        assignment = nearest_centroid(vectors, centroids)
        sums = torch.zeros_like(centroids).index_add_(0, assignment, vectors)
        counts = torch.bincount(assignment, minlength=n_lists).unsqueeze(1).float()
        centroids = torch.where(counts > 0, sums / counts.clamp(min=1), centroids)
    return centroids


def nearest_centroid(vectors, centroids, chunk: int = 16384):
    import torch

    half_norms = 0.5 * (centroids * centroids).sum(1)
    return torch.cat(
        [
            (vectors[i : i + chunk] @ centroids.T - half_norms).argmax(1)
            for i in range(0, vectors.shape[0], chunk)
        ]
    )


class InvertedFile:
    """Vectors grouped by k-means list; a query scores the lists nearest to it."""

    def __init__(self, vectors, n_lists: int):
        import torch

        self.centroids = kmeans(vectors, n_lists)
        assignment = nearest_centroid(vectors, self.centroids)
        self.order = torch.argsort(assignment, stable=True)
        self.sizes = torch.bincount(assignment, minlength=n_lists)
        self.offsets = torch.cumsum(self.sizes, 0) - self.sizes
        self.padding = vectors.shape[0]
        self.sorted = torch.cat([vectors[self.order], torch.zeros(1, vectors.shape[1])])

    def search(self, queries, n_probe: int, k: int):
        import torch

        probe = torch.topk(queries @ self.centroids.T, n_probe, dim=1).indices
        lengths = self.sizes[probe].flatten()
        per_query = self.sizes[probe].sum(1)
        starts = torch.repeat_interleave(self.offsets[probe].flatten(), lengths)
        positions = (
            starts
            + torch.arange(int(lengths.sum()))
            - torch.repeat_interleave(torch.cumsum(lengths, 0) - lengths, lengths)
        )
        query_of = torch.repeat_interleave(torch.arange(queries.shape[0]), per_query)
        column = torch.arange(positions.shape[0]) - torch.repeat_interleave(
            torch.cumsum(per_query, 0) - per_query, per_query
        )
        index = torch.full((queries.shape[0], int(per_query.max())), self.padding, dtype=torch.long)
        index[query_of, column] = positions
        scores = torch.bmm(self.sorted[index], queries.unsqueeze(2)).squeeze(2)
        scores[index == self.padding] = float("-inf")
        top = torch.topk(scores, min(k, scores.shape[1]), dim=1).indices
        return self.order[index.gather(1, top).clamp(max=self.padding - 1)]


def timed_batches(search, queries, batch: int = 64) -> Tuple[float, List[List[int]]]:
    """Milliseconds per query of ``search`` over batches of queries, and what it found."""
    found: List[List[int]] = []
    start = time.perf_counter()
    for i in range(0, queries.shape[0], batch):
        found.extend(search(queries[i : i + batch]).tolist())
    return 1000 * (time.perf_counter() - start) / queries.shape[0], found


def recall(found: List[List[int]], exact: List[List[int]], k: int) -> float:
    """Mean share of each query's exact top-k that was found."""
    return float(numpy.mean([len(set(f) & set(e)) / k for f, e in zip(found, exact)]))


def retrieval_data(work: Path, size: int, steps: int = 300):
    """The retrieval matrix of a KB grown to ``size`` and the demo's test mentions' queries."""
    import spacy

    if not (work / "pipeline").exists():
        train_demo_pipeline(work, steps)
    nlp = spacy.load(work / "pipeline")
    linker = nlp.get_pipe("m3el_linker")
    kb = grow_kb(linker.kb, size)
    linker.set_kb(lambda vocab: kb)
    docs, _ = mention_docs(nlp, work / "corpus" / "test.spacy")
    images, _ = linker.load_images(docs)
    mentions = linker.encode_mentions([d.ents[0] for d in docs], images)
    return linker.entity_cache.retrieval, linker.model.retrieval_vectors(mentions, query=True)


def compare(
    matrix, queries, lists: List[int], probes: List[int], k: int = 10
) -> List[Dict[str, object]]:
    """Time and recall@k of exhaustive float32, the shipped int8 search, and IVF settings."""
    import torch

    vectors = torch.from_numpy(matrix.vectors())

    def float32(q):
        return torch.topk(q @ vectors.T, k, dim=1).indices

    def int8(q):
        return torch.tensor(matrix.nearest(q.numpy(), k))

    rows: List[Dict[str, object]] = []
    exact = None  # the float32 search's top-k: what recall is measured against
    for name, search in (
        ("exhaustive, float32", float32),
        ("exhaustive, int8 + rescoring (shipped)", int8),
    ):
        timed_batches(search, queries[:64])  # warm-up
        ms, found = timed_batches(search, queries)
        exact = found if exact is None else exact
        rows.append({"method": name, "build_s": 0.0, "ms": ms, "recall": recall(found, exact, k)})
    for n_lists in lists:
        start = time.perf_counter()
        index = InvertedFile(vectors, n_lists)
        build = time.perf_counter() - start
        for n_probe in probes:
            ms, found = timed_batches(partial(index.search, n_probe=n_probe, k=k), queries)
            rows.append(
                {
                    "method": f"IVF {n_lists} lists, nprobe {n_probe}",
                    "build_s": build,
                    "ms": ms,
                    "recall": recall(found, exact, k),
                }
            )
    return rows


def main(argv: Optional[List[str]] = None) -> List[Dict[str, object]]:
    """Run the comparison, print its table and write it to the report. RETURNS: its rows."""
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--size", type=int, default=DEFAULTS["size"])
    parser.add_argument("--lists", type=int_list, default=DEFAULTS["lists"], help="IVF lists")
    parser.add_argument("--probes", type=int_list, default=DEFAULTS["probes"], help="nprobe")
    parser.add_argument(
        "--steps", type=int, default=DEFAULTS["steps"], help="training steps if no pipeline"
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="Markdown file whose IVF section is replaced (default: BENCHMARKS.md for a "
        "full-size run, else in the work folder)",
    )
    parser.add_argument("--no-output", action="store_true", help="only print the table")
    parser.add_argument("--threads", type=int, default=DEFAULTS["threads"], help="torch threads")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    work = (args.work or Path(tempfile.mkdtemp(prefix="m3el-ivf-"))).resolve()
    full_run = all(getattr(args, name) == value for name, value in DEFAULTS.items())
    matrix, queries = retrieval_data(work, args.size, args.steps)
    queries = torch.cat([torch.from_numpy(queries)] * 3)  # more batches for steadier timings
    rows = compare(matrix, queries, args.lists, args.probes)
    lines = [
        f"Machine: {machine()}. Date: {time.strftime('%Y-%m-%d')}. "
        f"Command: `{' '.join([COMMAND, *argv])}`.",
        "",
        f"Retrieval vectors of the tiny demo model, KB grown to {args.size:,} entities "
        f"x {matrix.width} dims, {queries.shape[0]} queries in batches of 64; "
        "recall@10 against the float32 exhaustive top-10.",
        "",
        "| stage 1 | index build s | ms/mention | recall@10 |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {row['method']} | {row['build_s']:.1f} | {row['ms']:.3f} | {row['recall']:.3f} |"
        for row in rows
    ]
    print("\n".join(lines))
    if not args.no_output:
        output = output_path(args.output, full_run, work)
        output.parent.mkdir(parents=True, exist_ok=True)
        write_section(output, IVF_HEADING, "\n".join(lines))
        print(f"wrote the IVF section of {output}")
    return rows


if __name__ == "__main__":
    main()
