"""Accuracy as the knowledge base grows: look-alikes, fresh names, and the name's evidence.

The demo's test mentions are linked against its 120 entities grown to 1K, 10K
and 100K with three kinds of distractors:

- ``distractors``: the ones of ``bench.scale`` (2% reuse real names; emblems
  from the same ~400 signatures as the real entities). Some are then the
  gold's twin by name and picture; the share of test mentions that have such a
  twin is the ceiling no model can pass, reported per size.
- ``fresh names``: the same distractors, none reusing a real name.
- ``look-alikes``: copies of real entities' images and descriptions under
  fresh names (a band and its members sharing a photo).

Per KB, Hits@1 of the whole linker (stage 1 + stage 2) for: a model trained
without mined negatives, ranking by its score; the default model (mined
negatives), ranking by its score; the default model with the alias evidence
fitted on dev data; the same with an empty alias table (dense retrieval only);
and the same with every test mention misspelt (one letter dropped). The
decision is fitted with a weight per matching unit (the default) and, for
comparison, with one weight for the model's overall score.

``--pipeline P --corpus C`` measures a trained pipeline of the demo (for example
``configs/demo-pretrained.cfg``'s, the pretrained towers) instead of the two tiny models
(its ``no mining`` column is then empty); its test and dev mentions come from ``C``.

Run from the repository root: ``python -m bench.accuracy``; the table goes to
the "Accuracy as the KB grows" section of BENCHMARKS.md (a reduced run writes
into its work folder).
"""

import argparse
import re
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy

from .common import (
    ACCURACY_HEADING,
    grow_kb,
    int_list,
    machine,
    mention_docs,
    output_path,
    train_demo_pipeline,
)
from .common import write_section as write_report_section

HEADING = ACCURACY_HEADING
FULL_SIZES = [1000, 10000, 100000]
KINDS = ("distractors", "fresh names", "look-alikes")
VARIANTS = (
    "no mining, score",
    "mined, score",
    "mined + alias, one score weight",
    "mined + alias",
    "no aliases",
    "misspelt",
)


def look_alike_kb(kb, size: int, seed: int = 2):
    """``kb`` grown with copies of its entities' images and descriptions under fresh names."""
    from spacy_m3el.datasets.demo import invent_names
    from spacy_m3el.kb import MultimodalKB, normalize_alias

    rng = numpy.random.default_rng(seed)
    records = list(kb.records())
    taken = {normalize_alias(r.name) for r in records}
    stems = invent_names(384, numpy.random.default_rng(seed + 1))
    grown = MultimodalKB(kb.vocab, image_root=kb.image_root)
    for r in records:
        grown.add_multimodal_entity(r.kb_id, r.name, r.description, r.images)
    i = 0
    while len(grown) < size:
        source = records[int(rng.integers(len(records)))]
        name = f"{stems[int(rng.integers(len(stems)))]} {stems[int(rng.integers(len(stems)))]}"
        if normalize_alias(name) in taken:
            continue
        description = source.description.replace(source.name, name)
        grown.add_multimodal_entity(f"L{i}", name, description, source.images)
        i += 1
    grown.add_name_aliases()
    return grown


def twin_share(kb, signatures: Dict[str, tuple], gold: List[str]) -> float:
    """Share of mentions whose gold has a distractor with its name and its emblem signature."""
    from spacy_m3el.datasets.demo import Signature, describe_signature
    from spacy_m3el.kb import normalize_alias

    twins = set()
    for kb_id, key in signatures.items():
        record = kb.get_record(kb_id)
        twins.add((normalize_alias(record.name), describe_signature(Signature(*key))))
    has_twin = []
    for kb_id in gold:
        record = kb.get_record(kb_id)
        name = normalize_alias(record.name)
        has_twin.append(any(n == name and sig in record.description for n, sig in twins))
    return float(numpy.mean(has_twin))


def misspell(nlp, doc):
    """A copy of a one-mention doc with one inner letter of the mention dropped."""
    ent = doc.ents[0]
    text = ent.text
    cut = max(1, len(text) // 2)
    wrong = text[:cut] + text[cut + 1 :] if len(text) > 2 else text
    new_text = doc.text[: ent.start_char] + wrong + doc.text[ent.end_char :]
    new = nlp.make_doc(new_text)
    start = ent.start_char
    new.ents = [new.char_span(start, start + len(wrong), label=ent.label_, alignment_mode="expand")]
    new._.image = doc._.image
    return new


def hits_at_1(nlp, docs, gold: List[str]) -> float:
    linked = nlp.pipe([d.copy() for d in docs], batch_size=64)
    return float(numpy.mean([d.ents[0].kb_id_ == g for d, g in zip(linked, gold)]))


def measure(pipelines: Dict[str, object], kb, dev, docs, gold, misspelt) -> Dict[str, float]:
    """Hits@1 of every variant on one KB (the decision fitted on dev mentions against it);
    without a ``"baseline"`` pipeline, its variant is None."""
    baseline, mined = pipelines.get("baseline"), pipelines["mined"]
    result = {}
    for nlp in (baseline, mined):
        if nlp is not None:
            nlp.get_pipe("m3el_linker").set_kb(lambda vocab: kb)
    linker = mined.get_pipe("m3el_linker")
    linker.fit_decision(dev, per_unit=False)
    result["mined + alias, one score weight"] = hits_at_1(mined, docs, gold)
    fitted = linker.fit_decision(dev)
    result["alias_weight"] = fitted.alias_weight
    result["unit_weights"] = dict(fitted.unit_weights)
    result["no mining, score"] = None
    if baseline is not None:
        baseline.get_pipe("m3el_linker").alias_evidence = False
        result["no mining, score"] = hits_at_1(baseline, docs, gold)
    linker.alias_evidence = False
    result["mined, score"] = hits_at_1(mined, docs, gold)
    linker.alias_evidence = True
    result["mined + alias"] = hits_at_1(mined, docs, gold)
    result["misspelt"] = hits_at_1(mined, misspelt, gold)
    with_aliases = linker.get_candidates_batch
    linker.get_candidates_batch = lambda kb, spans: [[] for _ in spans]
    result["no aliases"] = hits_at_1(mined, docs, gold)
    linker.get_candidates_batch = with_aliases
    return result


def run(
    work: Path,
    sizes: List[int],
    steps: int,
    limit: int,
    pipeline: Optional[Path] = None,
    corpus: Optional[Path] = None,
    kinds: Sequence[str] = KINDS,
) -> Dict[str, object]:
    """Train both models (or take ``pipeline`` and its ``corpus``), fit the decision, and
    measure every KB kind and size."""
    import spacy

    from spacy_m3el.readers import read_examples

    overrides = {"baseline": {"n_mined_negatives": 0}, "mined": None}
    paths = {"mined": pipeline} if pipeline is not None else {}
    corpus = corpus or work / "corpus"
    for name, override in overrides.items():
        if pipeline is not None:
            break
        # A model trained in this work folder before is reused (training is deterministic).
        trained = (work / name / "meta.json").exists() and (work / name / ".steps").exists()
        if trained and (work / name / ".steps").read_text() == str(steps):
            paths[name] = work / name
        else:
            paths[name] = train_demo_pipeline(work, steps, override, name)
            (work / name / ".steps").write_text(str(steps))
    pipelines = {name: spacy.load(path) for name, path in paths.items()}
    dev = list(read_examples(pipelines["mined"], corpus / "dev.spacy"))
    docs, gold = mention_docs(pipelines["mined"], corpus / "test.spacy", limit=limit)
    misspelt = [misspell(pipelines["mined"], d) for d in docs]
    real = pipelines["mined"].get_pipe("m3el_linker").kb
    rows = []
    for size in sizes:
        signatures: Dict[str, tuple] = {}
        builds = {
            "distractors": partial(grow_kb, real, size, signatures=signatures),
            "fresh names": partial(grow_kb, real, size, reuse_names=0.0),
            "look-alikes": partial(look_alike_kb, real, size),
        }
        for kind in kinds:
            build = builds[kind]
            start = time.perf_counter()
            kb = build()
            row = {
                "kind": kind,
                "size": len(kb),
                **measure(pipelines, kb, dev, docs, gold, misspelt),
            }
            row["ceiling"] = (
                1.0 - twin_share(kb, signatures, gold) if kind == "distractors" else 1.0
            )
            row["seconds"] = time.perf_counter() - start
            print(row, flush=True)
            rows.append(row)
    model = (
        f"pipeline `{pipeline}`" if pipeline else f"tiny encoder trained {steps} steps per model"
    )
    return {"rows": rows, "mentions": len(docs), "dev": len(dev), "model": model}


def report(results: Dict[str, object], command: str) -> str:
    lines = [
        f"Machine: {machine()}. Command: `{command}`.",
        "",
        f"Hits@1 (%) of the demo's {results['mentions']} test mentions; {results['model']}. "
        "The decision (`mined + alias` and the next two "
        "columns: a weight per matching unit; `one score weight`: one for the model's "
        f"overall score) is fitted on the {results['dev']} dev mentions linked against the "
        "same KB, as `fit-decision` does with a pipeline's KB. Ceiling: 100 minus the share of "
        "mentions whose gold has a twin (same name and emblem) among the distractors.",
        "",
        "| KB | entities | ceiling | " + " | ".join(VARIANTS) + " | alias weight | unit weights |",
        "|---|---|---|" + "---|" * (len(VARIANTS) + 2),
    ]
    for row in results["rows"]:
        cells = " | ".join("–" if row[v] is None else f"{row[v] * 100:.2f}" for v in VARIANTS)
        lines.append(
            f"| {row['kind']} | {row['size']:,} | {row['ceiling'] * 100:.2f} | {cells} "
            f"| {row['alias_weight']:.2f} | "
            + " / ".join(f"{u} {w:.2f}" for u, w in row["unit_weights"].items())
            + " |"
        )
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> Dict[str, object]:
    parser = argparse.ArgumentParser(prog="python -m bench.accuracy", description=__doc__)
    parser.add_argument(
        "--work", type=Path, default=None, help="Work folder (default: a temp one)."
    )
    parser.add_argument("--sizes", type=int_list, default=FULL_SIZES)
    parser.add_argument("--steps", type=int, default=1000, help="Training steps per model.")
    parser.add_argument("--mentions", type=int, default=0, help="Test mentions (0: all).")
    parser.add_argument("--pipeline", type=Path, default=None, help="A trained demo pipeline.")
    parser.add_argument("--corpus", type=Path, default=None, help="Its corpus (with --pipeline).")
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--heading", default=HEADING, help="The report's section heading.")
    parser.add_argument(
        "--kinds", default=",".join(KINDS), help="Of " + ", ".join(KINDS) + " (comma-separated)."
    )
    args = parser.parse_args(argv)
    if (args.pipeline is None) != (args.corpus is None):
        parser.error("--pipeline and --corpus go together (the pipeline's demo corpus).")
    work = args.work or Path(tempfile.mkdtemp(prefix="m3el-accuracy-"))
    kinds = [kind.strip() for kind in args.kinds.split(",") if kind.strip()]
    if not set(kinds) <= set(KINDS):
        parser.error(f"--kinds: choose from {', '.join(KINDS)}; got {args.kinds!r}.")
    results = run(work, args.sizes, args.steps, args.mentions, args.pipeline, args.corpus, kinds)
    full = args.sizes == FULL_SIZES and args.steps == 1000 and not args.mentions
    full = full and args.pipeline is None and kinds == list(KINDS)
    command = "python -m bench.accuracy " + " ".join(argv if argv is not None else sys.argv[1:])
    text = report(results, re.sub(r"\s+", " ", command).strip())
    print(text)
    write_report_section(output_path(args.output, full, work), args.heading, text)
    return results


if __name__ == "__main__":
    main()
