"""A corpus reader that keeps each doc's image on the predicted doc."""

from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Union

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
    ):
        install_image_extension(image_attr)
        self.image_attr = image_attr
        self.path = path
        self.corpus = Corpus(
            path,
            limit=limit,
            gold_preproc=gold_preproc,
            max_length=max_length,
            augmenter=augmenter,
            shuffle=shuffle,
        )

    def __call__(self, nlp: Language) -> Iterator[Example]:
        if self.path is None:
            raise ValueError(
                "spacy_m3el.MultimodalCorpus.v1 needs a path "
                "(for example --paths.train corpus/train.spacy)."
            )
        for eg in self.corpus(nlp):
            copy_image(eg.reference, eg.predicted, self.image_attr)
            yield eg


def read_examples(
    nlp: Language, path: Union[str, Path], image_attr: str = DEFAULT_IMAGE_ATTR
) -> Iterable[Example]:
    """All examples of a ``.spacy`` file with images on both sides."""
    return list(MultimodalCorpus(path, image_attr=image_attr)(nlp))
