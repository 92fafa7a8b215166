"""Memory over a long stream: nlp.pipe over 20K documents must keep RSS flat.

Run from the repository root:
      python -m bench.pipe_memory [--docs 20000] [--batch-size 64] [--output RESULT.json]

Prints RSS after every block of documents and the growth between the first
block (after warm-up) and the last. Uses a tiny offline CLIP and a small KB
(the test suite's, from ``tests/util.py``); a quarter of the documents carry
an unreadable image and some have none, so the fallback paths are exercised
too. The texts reuse a small vocabulary on purpose: spaCy's StringStore keeps
every new token string it sees (about 0.2 KB per unseen number in a first try
with "day {i}"), which is spaCy's behaviour, not this component's.
"""

import argparse
import json
import logging
import platform
import resource
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy
import spacy
from thinc.api import fix_random_seed

from spacy_m3el.kb import NIL
from spacy_m3el.ml.tiny_clip import build_tiny_clip
from tests.util import CORPUS, ENTITIES, color_image, create_kb, linker_config, make_examples


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build_pipeline(folder: Path):
    fix_random_seed(0)
    nlp = spacy.blank("en")
    nlp.add_pipe(
        "m3el_linker", config=linker_config(str(build_tiny_clip(folder, corpus=CORPUS)))
    ).set_kb(create_kb)
    examples = make_examples(nlp)
    nlp.initialize(lambda: examples)
    return nlp


def documents(nlp, n: int):
    rng = numpy.random.default_rng(0)
    for i in range(n):
        _, name, _, color = ENTITIES[i % len(ENTITIES)]
        doc = nlp.make_doc(f"{name} was seen near the harbour on day {i % 7}.")
        doc.ents = [doc.char_span(0, len(name), label="ENT")]
        kind = i % 4
        if kind == 0:
            doc._.image = f"/nonexistent/{i % 1000}.jpg"
        elif kind == 1:
            doc._.image = None
        else:
            doc._.image = color_image(tuple(int(c) for c in rng.integers(0, 255, 3)), size=48)
        yield doc


def stream(nlp, n_docs: int, batch_size: int, block: int) -> Dict[str, object]:
    """Link ``n_docs`` documents with ``nlp.pipe``: RSS and throughput after every block."""
    blocks: List[Dict[str, float]] = []
    print(f"{'docs':>8} {'RSS MiB':>9} {'docs/s':>8}")
    start = time.perf_counter()
    linked = 0
    for n, doc in enumerate(nlp.pipe(documents(nlp, n_docs), batch_size=batch_size), start=1):
        linked += doc.ents[0].kb_id_ != NIL
        if n % block == 0:
            blocks.append(
                {"docs": n, "rss_mib": rss_mib(), "docs_per_s": n / (time.perf_counter() - start)}
            )
            print(f"{n:>8} {blocks[-1]['rss_mib']:>9.1f} {blocks[-1]['docs_per_s']:>8.0f}")
    last = rss_mib()
    growth = last - blocks[0]["rss_mib"] if blocks else 0.0
    return {"docs": n_docs, "linked": linked, "blocks": blocks, "rss_growth_mib": growth}


def main(argv: Optional[List[str]] = None) -> Dict[str, object]:
    """Stream the documents; print (and with ``--output`` write as JSON) RSS per block."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=20000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--block", type=int, default=2000)
    parser.add_argument("--output", type=Path, default=None, help="also write the result (JSON)")
    args = parser.parse_args(argv)
    logger = logging.getLogger("spacy_m3el")
    level = logger.level
    logger.setLevel(logging.ERROR)  # one warning per batch (unreadable images) is expected here
    try:
        with tempfile.TemporaryDirectory() as tmp:
            nlp = build_pipeline(Path(tmp) / "clip")
            print(
                f"machine: {platform.processor() or platform.machine()}, "
                f"python {platform.python_version()}"
            )
            result = stream(nlp, args.docs, args.batch_size, args.block)
    finally:
        logger.setLevel(level)
    print(
        f"linked {result['linked']} of {args.docs} docs; RSS growth from the first block "
        f"to the end: {result['rss_growth_mib']:+.1f} MiB"
    )
    if args.output is not None:
        args.output.write_text(json.dumps(result, indent=1), encoding="utf8")
    return result


if __name__ == "__main__":
    main()
