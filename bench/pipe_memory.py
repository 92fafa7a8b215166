"""Memory over a long stream: nlp.pipe over 20K documents must keep RSS flat.

Run: python bench/pipe_memory.py [--docs 20000] [--batch-size 64]
Prints RSS after every block of documents and the growth between the first
block (after warm-up) and the last. Uses a tiny offline CLIP and a small KB;
a quarter of the documents carry an unreadable image and some have none, so
the fallback paths are exercised too. The texts reuse a small vocabulary on
purpose: spaCy's StringStore keeps every new token string it sees (about 0.2 KB
per unseen number in a first try with "day {i}"), which is spaCy's behaviour,
not this component's.
"""

import argparse
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy
import spacy
from thinc.api import fix_random_seed

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from spacy_m3el.ml.tiny_clip import build_tiny_clip  # noqa: E402
from tests.util import CORPUS, ENTITIES, color_image, create_kb, linker_config, make_examples  # noqa: E402


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=20000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--block", type=int, default=2000)
    args = parser.parse_args()
    import logging

    logging.getLogger("spacy_m3el").setLevel(
        logging.ERROR
    )  # one warning per batch is expected here
    with tempfile.TemporaryDirectory() as tmp:
        nlp = build_pipeline(Path(tmp) / "clip")
        print(
            f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}"
        )
        print(f"{'docs':>8} {'RSS MiB':>9} {'docs/s':>8}")
        start = time.perf_counter()
        first = None
        linked = 0
        for n, doc in enumerate(
            nlp.pipe(documents(nlp, args.docs), batch_size=args.batch_size), start=1
        ):
            linked += doc.ents[0].kb_id_ != "NIL"
            if n % args.block == 0:
                rss = rss_mib()
                first = rss if first is None else first
                print(f"{n:>8} {rss:>9.1f} {n / (time.perf_counter() - start):>8.0f}")
        last = rss_mib()
        print(
            f"linked {linked} of {args.docs} docs; RSS growth from the first block to the end: {last - first:+.1f} MiB"
        )


if __name__ == "__main__":
    main()
