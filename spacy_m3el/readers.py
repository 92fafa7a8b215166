"""A corpus reader that keeps each doc's image on the predicted doc."""

import random
from pathlib import Path
from typing import Callable, Iterable, Iterator, List, Optional, Union

import numpy
from spacy.language import Language
from spacy.training import Corpus, Example

from .images import DEFAULT_IMAGE_ATTR, copy_image, install_image_extension


class MultimodalCorpus:
    """Like ``spacy.Corpus.v1``, but ``eg.predicted`` keeps the reference's image.

    ``spacy.Corpus`` builds the predicted doc from the reference text alone, so
    extension values such as ``doc._.image`` exist only on ``eg.reference``.

    path (Union[str, Path]): A ``.spacy`` file or a folder of them.
    image_attr (str): The image extension name.
    limit (int): Maximum number of examples (0 for all).
    gold_preproc, max_length, augmenter, shuffle: As for ``spacy.Corpus``.
    fraction (float): Keep this share of the examples the corpus yields (documents, or
        sentences with ``gold_preproc``; the MIMIC datasets have one mention per
        document), for low-resource training, chosen once by ``subset_seed``
        so every run and every epoch sees the same subset.
    subset_seed (int): Seed of the subset (independent of the training seed).
    """

    def __init__(
        self,
        path: Optional[Union[str, Path]],
        *,
        image_attr: str = DEFAULT_IMAGE_ATTR,
        limit: int = 0,
        gold_preproc: bool = False,
        max_length: int = 0,
        augmenter: Optional[Callable] = None,
        shuffle: bool = False,
        fraction: float = 1.0,
        subset_seed: int = 0,
    ):
        if not 0.0 < fraction <= 1.0:
            raise ValueError(
                f"spacy_m3el.MultimodalCorpus.v1: fraction must be in (0, 1], got {fraction}."
            )
        install_image_extension(image_attr)
        self.image_attr = image_attr
        self.path = path
        self.fraction = fraction
        self.subset_seed = subset_seed
        self.shuffle = shuffle
        self.corpus = Corpus(
            path,
            limit=limit,
            gold_preproc=gold_preproc,
            max_length=max_length,
            augmenter=augmenter,
            shuffle=shuffle and fraction == 1.0,
        )

    def __call__(self, nlp: Language) -> Iterator[Example]:
        if self.path is None:
            raise ValueError(
                "spacy_m3el.MultimodalCorpus.v1 needs a path "
                "(for example --paths.train corpus/train.spacy)."
            )
        examples = self.corpus(nlp) if self.fraction == 1.0 else self._subset(nlp)
        for eg in examples:
            copy_image(eg.reference, eg.predicted, self.image_attr)
            yield eg

    def _subset(self, nlp: Language) -> List[Example]:
        examples = list(self.corpus(nlp))
        keep = subset_indices(len(examples), self.fraction, self.subset_seed)
        chosen = [examples[i] for i in keep]
        if self.shuffle:
            random.shuffle(chosen)  # as spacy.Corpus does, seeded by spaCy
        return chosen


def subset_indices(n: int, fraction: float, seed: int) -> List[int]:
    """``round(fraction * n)`` (at least one) of ``range(n)``, in order, fixed by ``seed``."""
    size = max(1, round(fraction * n)) if n else 0
    return sorted(int(i) for i in numpy.random.default_rng(seed).permutation(n)[:size])


def read_examples(
    nlp: Language, path: Union[str, Path], image_attr: str = DEFAULT_IMAGE_ATTR
) -> Iterable[Example]:
    """All examples of a ``.spacy`` file with images on both sides."""
    return list(MultimodalCorpus(path, image_attr=image_attr)(nlp))
