"""Helpers for tests: a KB where only images tell entities apart, docs, training."""

import io
from typing import Dict, List, Optional

import numpy
import spacy
from PIL import Image
from spacy.language import Language
from spacy.training import Example

from spacy_m3el.kb import MultimodalKB

TINY = {"text_width": 32, "vision_width": 32, "projection_dim": 32}
SENTENCE = "{name} was in the news again this week."
# Entities sharing a name differ only by description and by image colour.
ENTITIES = [
    ("Q1", "Jordan", "a basketball player", (220, 30, 30)),
    ("Q2", "Jordan", "a river in the east", (30, 30, 220)),
    ("Q3", "Kastrel", "a city on the coast", (30, 200, 30)),
    ("Q4", "Kastrel", "a rock band", (220, 200, 30)),
    ("Q5", "Velmora", "a ship", (200, 30, 200)),
    ("Q6", "Velmora", "a painting", (30, 200, 200)),
]
CORPUS = [SENTENCE.format(name=n) + " " + d for _, n, d, _ in ENTITIES]


def linker_config(tiny_clip: str, **model_overrides) -> Dict:
    model = {"hidden_width": 16, "image_width": 16, "encoder": {"name": tiny_clip, **TINY}}
    model.update(model_overrides)
    return {"model": model}


def color_image(color, size: int = 40, noise: int = 0, seed: int = 0) -> numpy.ndarray:
    """An HxWx3 uint8 image of one colour, optionally with uniform noise."""
    array = numpy.full((size, size, 3), color, dtype=numpy.int16)
    if noise:
        array += numpy.random.default_rng(seed).integers(
            -noise, noise + 1, array.shape, dtype=numpy.int16
        )
    return array.clip(0, 255).astype(numpy.uint8)


def png_bytes(array: numpy.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def create_kb(vocab) -> MultimodalKB:
    kb = MultimodalKB(vocab)
    for kb_id, name, description, color in ENTITIES:
        kb.add_multimodal_entity(kb_id, name, description, [png_bytes(color_image(color))])
    kb.add_name_aliases()
    return kb


def make_doc(nlp: Language, kb_id: Optional[str], image=None) -> spacy.tokens.Doc:
    """A mention doc for an entity of ENTITIES (the mention is the first token)."""
    name = next(n for k, n, _, _ in ENTITIES if k == kb_id)
    doc = nlp.make_doc(SENTENCE.format(name=name))
    doc.ents = [doc.char_span(0, len(name), label="ENT", kb_id=kb_id or "")]
    doc._.image = image
    return doc


def make_examples(
    nlp: Language, per_entity: int = 2, noise: int = 20, seed: int = 0
) -> List[Example]:
    examples = []
    for i, (kb_id, _, _, color) in enumerate(ENTITIES):
        for j in range(per_entity):
            reference = make_doc(
                nlp, kb_id, color_image(color, noise=noise, seed=seed + 10 * i + j)
            )
            examples.append(Example(nlp.make_doc(reference.text), reference))
    return examples


def unlabeled(nlp: Language, eg: Example) -> spacy.tokens.Doc:
    """The reference doc with entity spans but without KB IDs."""
    doc = nlp.make_doc(eg.reference.text)
    doc.ents = [doc.char_span(e.start_char, e.end_char, label=e.label_) for e in eg.reference.ents]
    doc._.image = eg.reference._.image
    return doc


def train(nlp: Language, examples: List[Example], steps: int = 60) -> List[float]:
    optimizer = nlp.create_optimizer()
    history = []
    for _ in range(steps):
        losses = nlp.update(examples, sgd=optimizer)
        history.append(losses["m3el_linker"])
    return history


def trained_pipeline(tiny_clip: str, steps: int = 10) -> Language:
    """A blank pipeline with an m3el_linker trained for a few steps on the image-decisive KB."""
    from thinc.api import fix_random_seed

    fix_random_seed(0)
    nlp = spacy.blank("en")
    nlp.add_pipe("m3el_linker", config=linker_config(tiny_clip)).set_kb(create_kb)
    examples = make_examples(nlp)
    nlp.initialize(lambda: examples)
    train(nlp, examples, steps=steps)
    return nlp


def transformer_pipeline(
    tiny_clip: str, tiny_bert: str, *, ner: bool = False, encoder: Optional[Dict] = None
) -> Language:
    """A blank pipeline: a spacy-transformers ``transformer`` (tiny BERT), optionally an
    ``ner`` listening to it, and an ``m3el_linker`` whose text tower listens to it (not
    initialized). ``encoder``: the linker's encoder config (default: the tiny CLIP's
    vision tower)."""
    from thinc.api import fix_random_seed

    fix_random_seed(0)
    nlp = spacy.blank("en")
    listener = {
        "@architectures": "spacy-transformers.TransformerListener.v1",
        "upstream": "transformer",
        "pooling": {"@layers": "reduce_mean.v1"},
    }
    nlp.add_pipe(
        "transformer",
        config={
            "model": {
                "@architectures": "spacy-transformers.TransformerModel.v3",
                "name": tiny_bert,
                "get_spans": {
                    "@span_getters": "spacy-transformers.strided_spans.v1",
                    "window": 64,
                    "stride": 48,
                },
                "tokenizer_config": {"use_fast": True},
            }
        },
    )
    if ner:
        nlp.add_pipe(
            "ner",
            config={
                "model": {
                    "@architectures": "spacy.TransitionBasedParser.v2",
                    "state_type": "ner",
                    "hidden_width": 16,
                    "maxout_pieces": 2,
                    "use_upper": False,
                    "tok2vec": listener,
                }
            },
        )
    model = {
        "@architectures": "spacy_m3el.M3EL.v3",
        "hidden_width": 16,
        "image_width": 16,
        "encoder": encoder
        or {"@misc": "spacy_m3el.CLIPVisionEncoder.v1", "name": tiny_clip, **TINY},
        "alignment": {"@misc": "spacy_m3el.AttentionAlignment.v1"},
        "text_tower": {"@architectures": "spacy_m3el.TransformerTextTower.v1", "tok2vec": listener},
    }
    nlp.add_pipe("m3el_linker", config={"model": model}).set_kb(create_kb)
    return nlp


def trained_transformer_pipeline(tiny_clip: str, tiny_bert: str, steps: int):
    """:func:`transformer_pipeline` with an NER, initialized and trained ``steps`` steps on
    :func:`make_examples`; RETURNS (nlp, examples)."""
    nlp = transformer_pipeline(tiny_clip, tiny_bert, ner=True)
    examples = make_examples(nlp)
    nlp.initialize(lambda: examples)
    optimizer = nlp.create_optimizer()
    for _ in range(steps):
        nlp.update(examples, sgd=optimizer)
    return nlp, examples


def raw_docs(nlp: Language, examples: List[Example]) -> List[spacy.tokens.Doc]:
    """The examples' texts as new docs with their images (no entities): raw input."""
    docs = []
    for eg in examples:
        doc = nlp.make_doc(eg.reference.text)
        doc._.image = eg.reference._.image
        docs.append(doc)
    return docs
