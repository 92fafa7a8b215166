"""The reader keeps images on the predicted docs; spacy.Corpus does not."""

import pytest
import spacy
from spacy.tokens import DocBin
from spacy.training import Corpus

from spacy_m3el.readers import MultimodalCorpus, read_examples

from .util import ENTITIES, color_image, make_doc


def write_corpus(nlp, path):
    docs = [make_doc(nlp, kb_id, color_image(color)) for kb_id, _, _, color in ENTITIES]
    docs.append(make_doc(nlp, "Q1", None))
    DocBin(docs=docs, store_user_data=True).to_disk(path)
    return docs


def test_reader_keeps_images(tmp_path):
    nlp = spacy.blank("en")
    docs = write_corpus(nlp, tmp_path / "train.spacy")
    examples = list(MultimodalCorpus(tmp_path / "train.spacy")(nlp))
    assert len(examples) == len(docs)
    for eg, doc in zip(examples, docs):
        if doc._.image is None:
            assert eg.predicted._.image is None
        else:
            assert (eg.predicted._.image == doc._.image).all()
            assert (eg.reference._.image == doc._.image).all()
        assert eg.reference.ents[0].kb_id_ == doc.ents[0].kb_id_
    # spaCy's own reader loses them on the predicted side: the reason this reader exists.
    plain = list(Corpus(tmp_path / "train.spacy")(nlp))
    assert plain[0].predicted._.image is None and plain[0].reference._.image is not None


def test_read_examples_and_missing_path(tmp_path):
    nlp = spacy.blank("en")
    write_corpus(nlp, tmp_path / "dev.spacy")
    assert len(read_examples(nlp, tmp_path / "dev.spacy")) == len(ENTITIES) + 1
    import pytest

    with pytest.raises(ValueError, match="needs a path"):
        list(MultimodalCorpus(None)(nlp))


def test_subset_keeps_the_requested_fraction_fixed_by_its_seed(tmp_path):
    from spacy.tokens import DocBin

    from spacy_m3el.readers import subset_indices

    nlp = spacy.blank("en")
    docs = [
        make_doc(nlp, ENTITIES[i % len(ENTITIES)][0], color_image((i, 0, 0))) for i in range(40)
    ]
    DocBin(docs=docs, store_user_data=True).to_disk(tmp_path / "train.spacy")
    texts = [doc.text + str(doc._.image[0, 0, 0]) for doc in docs]

    def read(**kwargs):
        return [
            eg.predicted.text + str(eg.predicted._.image[0, 0, 0])
            for eg in MultimodalCorpus(tmp_path / "train.spacy", **kwargs)(nlp)
        ]

    tenth = read(fraction=0.1, subset_seed=3)
    assert len(tenth) == 4 and set(tenth) <= set(texts)
    assert read(fraction=0.1, subset_seed=3) == tenth  # the same subset every time
    assert read(fraction=0.1, subset_seed=4) != tenth
    half = read(fraction=0.5, subset_seed=3, shuffle=True)
    assert len(half) == 20
    assert sorted(half) == sorted(texts[i] for i in subset_indices(40, 0.5, 3))
    assert read() == texts  # fraction 1.0: every document, in file order
    assert subset_indices(3, 0.01, 0) and subset_indices(0, 0.5, 0) == []
    with pytest.raises(ValueError, match="fraction must be in"):
        MultimodalCorpus(tmp_path / "train.spacy", fraction=0.0)
