"""The reader keeps images on the predicted docs; spacy.Corpus does not."""

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
