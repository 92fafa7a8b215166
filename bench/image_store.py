"""Building the image store: seconds for a dataset's images, one process against several.

The values are those ``M3ELLinker.initialize`` puts in the store: the training and dev
documents' images and every image of the KB. Each build starts from an empty folder.
Processors: the demo's tiny CLIP (32 px) and CLIP ViT-B/32's (224 px, default settings).
Run from the repository root: ``python -m bench.image_store`` (about 1 min).
"""

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import List, Optional

from .common import command_line, int_list, machine, publish
from .train_speed import SIX_K, prepare_data, prepare_encoders

HEADING = "## Building the image store"


def image_values(corpus: Path) -> list:
    """The stored image values of the corpus's train and dev documents and of its KB."""
    import spacy
    from spacy.tokens import DocBin
    from spacy.util import registry

    from spacy_m3el.images import get_image

    nlp = spacy.blank("en")
    values = [
        get_image(doc, "image")
        for split in ("train", "dev")
        for doc in DocBin().from_disk(corpus / f"{split}.spacy").get_docs(nlp.vocab)
    ]
    kb = registry.misc.get("spacy_m3el.KBFromFile.v1")(str(corpus / "kb"))(nlp.vocab)
    for record in kb.records():
        values += [kb.resolve_image(ref) for ref in record.images]
    return values


def main(argv: Optional[List[str]] = None) -> str:
    from transformers import CLIPImageProcessor

    from spacy_m3el.image_store import ImageStore

    parser = argparse.ArgumentParser(prog="python -m bench.image_store", description=__doc__)
    parser.add_argument(
        "--work", type=Path, default=Path(tempfile.gettempdir()) / "m3el-train-speed"
    )
    parser.add_argument("--dataset", default="demo-6k", choices=["demo", "demo-6k"])
    parser.add_argument("--workers", type=int_list, default=[1, 2])
    parser.add_argument("--output", type=Path, default=None, help="Markdown file to update.")
    args = parser.parse_args(argv)
    work = args.work.resolve()
    corpus = prepare_data(work, args.dataset, SIX_K if args.dataset == "demo-6k" else [])
    tiny = prepare_encoders(work, work / args.dataset / "assets", "")["tiny"]
    values = image_values(corpus)
    processors = {
        "tiny CLIP, 32 px": CLIPImageProcessor.from_pretrained(tiny),
        "ViT-B/32, 224 px": CLIPImageProcessor(),
    }
    command = command_line("bench.image_store", argv)
    lines = [
        f"Machine: {machine()}",
        f"Command: `{command.strip()}`; {len(values):,} image values ({args.dataset}).",
        "",
        "| processor | worker processes | images stored | seconds |",
        "|---|---|---|---|",
    ]
    for name, processor in processors.items():
        for workers in args.workers:
            folder = Path(tempfile.mkdtemp(dir=work))
            start = time.perf_counter()
            store = ImageStore.build(folder / "store", processor, values, workers=workers)
            seconds = time.perf_counter() - start
            lines.append(f"| {name} | {workers} | {len(store):,} | {seconds:.1f} |")
            shutil.rmtree(folder)
    text = "\n".join(lines) + "\n"
    return publish(text, args.output, HEADING)


if __name__ == "__main__":
    main()
