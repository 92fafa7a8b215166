"""Helpers shared by the benchmarks: timing, the machine, the demo pipeline, grown KBs, reports."""

import os
import platform
import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import numpy

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
IVF_HEADING = "## Approximate index (IVF) vs exhaustive stage 1"  # written by approximate_index
ACCURACY_HEADING = "## Accuracy as the KB grows"  # written by accuracy


# Measuring ----------------------------------------------------------------------


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (VmHWM), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def machine() -> str:
    """CPU, cores, memory and library versions, for the report."""
    import spacy
    import torch
    import transformers

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.machine(),
    )
    mem = next(
        (
            int(line.split()[1]) / 1024**2
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        ),
        0,
    )
    return (
        f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, Python {platform.python_version()}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"spaCy {spacy.__version__}, transformers {transformers.__version__}"
    )


class Timer:
    """Seconds accumulated per named section: ``with timer("name"): ...``."""

    def __init__(self) -> None:
        self.seconds: Dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


def median_run(run: Callable[[], object], repeats: int = 5) -> Tuple[float, object]:
    """Call ``run`` ``repeats`` times: the median wall time in seconds, and that call's result."""
    runs = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        out = run()
        runs.append((time.perf_counter() - start, out))
    runs.sort(key=lambda item: item[0])
    return runs[len(runs) // 2]


# The demo pipeline and its test mentions ----------------------------------------


def tiny_model_config(clip: Path) -> Dict[str, object]:
    """The m3el_linker config of the benchmarks' tiny model (the demo's encoder)."""
    encoder = {"name": str(clip), "text_width": 32, "vision_width": 32, "projection_dim": 32}
    return {"model": {"hidden_width": 32, "image_width": 32, "encoder": encoder}}


def train_demo_pipeline(
    work: Path, steps: int, overrides: Optional[Dict[str, object]] = None, name: str = "pipeline"
) -> Path:
    """Generate and prepare the demo dataset, train a tiny linker, save it to ``work/name``.

    overrides (Optional[Dict[str, object]]): Component settings over the factory defaults.
    The dataset, corpus and tiny CLIP are made once per work folder.
    """
    import spacy
    from thinc.api import fix_random_seed

    from spacy_m3el.datasets.demo import generate_demo_dataset, make_demo_corpus_texts
    from spacy_m3el.datasets.mimic import prepare_dataset
    from spacy_m3el.kb import kb_from_file
    from spacy_m3el.ml.tiny_clip import build_tiny_clip
    from spacy_m3el.readers import read_examples

    work = Path(work)
    clip = work / "tiny-clip"
    if not (clip / "config.json").exists():
        generate_demo_dataset(work / "demo")
        prepare_dataset("demo", work / "demo", work / "corpus", work / "corpus" / "kb")
        build_tiny_clip(clip, corpus=make_demo_corpus_texts(work / "demo"))
    fix_random_seed(0)
    nlp = spacy.blank("en")
    linker = nlp.add_pipe("m3el_linker", config={**tiny_model_config(clip), **(overrides or {})})
    linker.set_kb(kb_from_file(work / "corpus" / "kb"))
    examples = read_examples(nlp, work / "corpus" / "train.spacy")
    nlp.initialize(lambda: examples)
    optimizer = nlp.create_optimizer()
    rng = numpy.random.default_rng(0)
    for _ in range(steps):
        batch = [examples[i] for i in rng.choice(len(examples), 32, replace=False)]
        nlp.update(batch, sgd=optimizer)
    nlp.to_disk(work / name)
    return work / name


def mention_docs(nlp, path: Path, limit: int = 0) -> Tuple[list, List[str]]:
    """Test mentions as docs with the gold span (KB ID cleared) and the image; plus gold IDs.

    limit (int): Keep the first ``limit`` mentions (0 keeps all).
    """
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


def grow_kb(
    kb,
    size: int,
    seed: int = 1,
    reuse_names: float = 0.02,
    signatures: Optional[Dict[str, tuple]] = None,
    image_folder: Optional[Path] = None,
):
    """A copy of ``kb`` grown to ``size`` entities with synthetic distractors.

    Distractor names combine the demo's syllables (a share ``reuse_names`` reuse
    real names); each gets a description from the demo's templates and one of
    ~400 emblem images.

    signatures (Optional[Dict[str, tuple]]): Filled with each distractor's emblem
        signature (background, foreground, shape).
    image_folder (Optional[Path]): Write the emblems there as PNG files and give the
        distractors their paths (as a real KB holds them), instead of pixel arrays.
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
        if rng.random() < reuse_names:
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
            if image_folder is not None:
                from PIL import Image

                path = Path(image_folder) / f"emblem-{len(images)}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(images[key]).save(path)
                images[key] = str(path.resolve())
        description = entity_type.description.format(
            name=name, region="a distant region", year=1900 + i % 120, number=i % 90
        )
        grown.add_multimodal_entity(f"D{i}", name, description, [images[key]])
        if signatures is not None:
            signatures[f"D{i}"] = key
    grown.add_name_aliases()
    return grown


# Reports --------------------------------------------------------------------------


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


def command_line(module: str, argv: Optional[List[str]]) -> str:
    """How a benchmark was run: ``python -m <module>`` and its arguments (``argv`` or sys.argv)."""
    import sys

    return f"python -m {module} " + " ".join(sys.argv[1:] if argv is None else argv)


def publish(text: str, output: Optional[Path], heading: str) -> str:
    """Print a report and, given a Markdown file, replace its section ``heading``."""
    print(text)
    if output is not None:
        write_section(output, heading, text)
    return text


def output_path(given: Optional[Path], full_run: bool, work: Path) -> Path:
    """Where a report goes: ``given``; else BENCHMARKS.md for a full-size run, else the work dir.

    Reduced (smoke) runs never overwrite the repository's BENCHMARKS.md unless asked to.
    """
    if given is not None:
        return Path(given)
    return BENCHMARKS_MD if full_run else Path(work) / "BENCHMARKS.md"


def pct(value) -> str:
    """A share as a percentage with two decimals ("–" for none), for report tables."""
    return "–" if value is None else f"{float(value) * 100:.2f}"


def int_list(text: str) -> List[int]:
    """``"1000,10000"`` -> ``[1000, 10000]`` (for argparse)."""
    return [int(part) for part in text.split(",") if part.strip()]
