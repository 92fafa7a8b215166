"""``python -m spacy_m3el visualize``: an HTML page of a pipeline's links on a ``.spacy`` file."""

import argparse
from itertools import islice
from pathlib import Path
from typing import List, Tuple


def add_visualize_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, help="Pipeline folder (with an m3el_linker).")
    parser.add_argument("data", type=Path, help="A .spacy file (gold links make a report).")
    parser.add_argument("--output", required=True, type=Path, help="HTML file to write.")
    parser.add_argument("--metrics", type=Path, default=None, help="Metrics JSON of evaluate.")
    parser.add_argument("--top-k", type=int, default=5, help="Candidates shown per span.")
    parser.add_argument("--limit", type=int, default=0, help="Link at most this many docs.")
    parser.add_argument("--max-docs", type=int, default=200, help="Documents shown in full.")
    parser.add_argument("--max-errors", type=int, default=100, help="Worst errors listed.")
    parser.add_argument(
        "--image-budget-kib", type=int, default=8192, help="Inline thumbnail bytes at most."
    )
    parser.add_argument(
        "--entities",
        choices=("auto", "gold", "pipeline"),
        default="auto",
        help="Spans to link: the file's gold spans, or those the pipeline's NER finds "
        "(auto: gold unless a component before the linker sets doc.ents).",
    )


def run_visualize(args: argparse.Namespace) -> int:
    import spacy
    import srsly

    from ..evaluation import find_linker
    from ..readers import MultimodalCorpus
    from .page import render, render_report

    if not args.model.is_dir():
        raise FileNotFoundError(f"Pipeline folder not found: {args.model}")
    if not args.data.exists():
        raise FileNotFoundError(f"Data not found: {args.data}")
    nlp = spacy.load(args.model)
    linker = find_linker(nlp)
    gold_spans = args.entities == "gold" or (args.entities == "auto" and not _has_ner(nlp))
    examples = MultimodalCorpus(args.data, image_attr=linker.image_attr)(nlp)
    references, docs = _link(nlp, linker, islice(examples, args.limit or None), gold_spans)
    has_gold = any(ent.kb_id_ for doc in references for ent in doc.ents)
    budget = args.image_budget_kib * 1024
    if has_gold:
        metrics = srsly.read_json(args.metrics) if args.metrics else None
        html = render_report(
            docs,
            references,
            linker.kb,
            metrics=metrics,
            top_k=args.top_k,
            max_docs=args.max_docs,
            max_errors=args.max_errors,
            title=f"spacy-m3el: {args.model.name} on {args.data.name}",
            image_budget=budget,
            image_attr=linker.image_attr,
        )
    else:
        html = render(
            docs[: args.max_docs],
            linker.kb,
            top_k=args.top_k,
            title=f"spacy-m3el: {args.model.name} on {args.data.name}",
            image_budget=budget,
            image_attr=linker.image_attr,
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(html, encoding="utf8")
    print(f"{len(docs)} documents linked; {args.output} ({len(html) / 1024:.0f} KiB)")
    return 0


def _has_ner(nlp) -> bool:
    for name in nlp.pipe_names:
        if name == "m3el_linker" or nlp.get_pipe_meta(name).factory == "m3el_linker":
            return False
        if "doc.ents" in nlp.get_pipe_meta(name).assigns:
            return True
    return False


def _link(nlp, linker, examples, gold_spans: bool) -> Tuple[List, List]:
    """Reference docs and the linked docs (gold spans linked by the linker alone, or the
    whole pipeline run on the text and image)."""
    from ..images import copy_image

    references, inputs = [], []
    for eg in examples:
        doc = nlp.make_doc(eg.reference.text)
        copy_image(eg.reference, doc, linker.image_attr)
        if gold_spans:
            doc.ents = [
                doc.char_span(e.start_char, e.end_char, label=e.label_, alignment_mode="expand")
                for e in eg.reference.ents
            ]
        references.append(eg.reference)
        inputs.append(doc)
    if gold_spans:
        return references, list(linker.pipe(inputs))
    docs = iter(inputs)
    for _, component in nlp.pipeline:
        docs = component.pipe(docs) if hasattr(component, "pipe") else map(component, docs)
    return references, list(docs)
