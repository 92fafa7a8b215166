"""Linked docs and a KB made by hand (no model needed), with hostile strings in the data."""

import pytest
import spacy

from spacy_m3el.images import install_image_extension
from spacy_m3el.kb import MultimodalKB
from spacy_m3el.pipeline.ranking import install_span_extension

from ..util import color_image, png_bytes

SCRIPT = "<script>window.parent.__pwned = 1</script>"
ATTRIBUTE = '"><img src=x onerror="window.parent.__pwned = 1">'


@pytest.fixture
def kb_and_docs():
    """A KB of two same-name siblings and a hostile entity, three linked docs and their gold."""
    install_image_extension()
    install_span_extension()
    nlp = spacy.blank("en")
    kb = MultimodalKB(nlp.vocab)
    kb.add_multimodal_entity(
        "Q1", "Jordan", "a basketball player", [png_bytes(color_image((200, 30, 30)))]
    )
    kb.add_multimodal_entity("Q2", "Jordan", "a river", [png_bytes(color_image((30, 30, 200)))])
    kb.add_multimodal_entity("Q3", ATTRIBUTE, SCRIPT, [b"not an image"])
    kb.add_name_aliases()
    texts = [f"Jordan scored again {SCRIPT}", "Jordan flooded.", "Jordan is here."]
    links = [
        ("Q1", [("Q1", 0.9), ("Q3", 0.1)]),
        ("Q1", [("Q1", 0.6), ("Q2", 0.4)]),
        ("Q3", [("Q3", 0.7)]),
    ]
    golds = ["Q1", "Q2", "Q2"]
    images = [color_image((200, 30, 30)), None, b"broken bytes"]
    docs, gold_docs = [], []
    for text, (kb_id, candidates), gold, image in zip(texts, links, golds, images):
        doc = nlp.make_doc(text)
        doc.ents = [doc.char_span(0, 6, label=f"PER{SCRIPT}", kb_id=kb_id)]
        doc.ents[0]._.m3el_candidates = candidates
        doc._.image = image
        docs.append(doc)
        ref = nlp.make_doc(text)
        ref.ents = [ref.char_span(0, 6, label="PER", kb_id=gold)]
        gold_docs.append(ref)
    return kb, docs, gold_docs
