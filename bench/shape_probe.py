"""How well a trained linker's image vectors tell emblems of the same colours apart.

Run from the repository root:
      python -m bench.shape_probe PIPELINE [PIPELINE ...] [--per-shape 4]

For every pair of demo colours (every third, 24 pairs) it draws the clean KB
emblem of each shape in those colours and ``--per-shape`` noisy mention emblems
of each, and counts how often a mention's global image vector (``image.g``, the
image unit's bi-encoder term) is nearest to the KB emblem of its own shape. Two
entities with the same colours differ only in shape here, as the look-alike
distractors that keep ``bench.accuracy`` below its ceiling do. Chance is one in
the number of shapes.
"""

import argparse
from pathlib import Path
from typing import Dict, List, Optional

import numpy

from spacy_m3el.datasets.demo_images import (
    COLOURS,
    SHAPES,
    Signature,
    entity_image,
    mention_image,
)


def colour_pairs() -> List[tuple]:
    """Every third ordered pair of distinct demo colours (background, foreground)."""
    colours = list(COLOURS)
    return [(b, f) for b in colours for f in colours if b != f][::3]


def image_vectors(model, images: list, role: str) -> numpy.ndarray:
    """Unit-length global image vectors of images, as mentions or entities."""
    side = model.encode(role, [""] * len(images), images)
    vectors = numpy.asarray(side["image.g"], dtype="float32")
    return vectors / numpy.linalg.norm(vectors, axis=1, keepdims=True)


def shape_accuracy(nlp, per_shape: int = 4, seed: int = 0) -> float:
    """Share of noisy emblems whose nearest same-colour KB emblem has their shape."""
    model = nlp.get_pipe("m3el_linker").model
    if "image.g" not in model.net.retrieval_spec.keys:
        raise ValueError("The probe needs a model with the image unit (use_image_unit = true).")
    rng = numpy.random.default_rng(seed)
    right = total = 0
    for background, foreground in colour_pairs():
        signatures = [Signature(background, foreground, shape) for shape in SHAPES]
        kb = image_vectors(model, [entity_image(s, rng, 0) for s in signatures], "entity")
        for i, signature in enumerate(signatures):
            noisy = [mention_image(signature, rng) for _ in range(per_shape)]
            nearest = (image_vectors(model, noisy, "mention") @ kb.T).argmax(axis=1)
            right += int((nearest == i).sum())
            total += per_shape
    return right / total


def main(argv: Optional[List[str]] = None) -> Dict[str, float]:
    """Print the shape accuracy of each pipeline as a table."""
    import spacy

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pipelines", type=Path, nargs="+", help="trained pipeline folders")
    parser.add_argument("--per-shape", type=int, default=4, help="noisy emblems per shape")
    args = parser.parse_args(argv)
    results = {str(p): shape_accuracy(spacy.load(p), args.per_shape) for p in args.pipelines}
    print(f"| pipeline | shape accuracy (chance {100 / len(SHAPES):.1f}%) |\n|---|---|")
    for path, accuracy in results.items():
        print(f"| {path} | {100 * accuracy:.1f}% |")
    return results


if __name__ == "__main__":
    main()
