"""A text tower that reads a shared spacy-transformers component.

With ``spacy_m3el.TransformerTextTower.v1`` the linker's text features come
from the pipeline's ``transformer`` component, the way spaCy's own NER or
tagger read it: mentions through spacy-transformers' listener (the
transformer ran once on the batch; the linker's gradients go back to it with
the NER's), entity names and descriptions, and any doc the transformer did
not see (a KB entity used as a mention), through the same transformer model
directly. The tower gives token vectors aligned to spaCy tokens; the
encoder (``ml.vision_encoder``) projects and pools them.
"""

import hashlib
import weakref
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy
from spacy.tokens import Doc, Span
from thinc.api import Model

# How an entity text joins name and description; the name's tokens are its focus.
SEPARATOR = " [SEP] "
Backprop = Callable[[numpy.ndarray], None]


@dataclass(frozen=True)
class MentionWindow:
    """A mention and its context: the tokens ``start:end`` of the mention's doc."""

    span: Span
    start: int
    end: int


@dataclass
class TokenArrays:
    """Token vectors of n items, padded to the longest.

    tokens (numpy.ndarray[n, L, W]): float32 vectors.
    mask (numpy.ndarray[n, L]): True for real tokens.
    focus (numpy.ndarray[n, L]): True for the tokens pooled into the item's global
        vector: a mention's own tokens, an entity's name.
    """

    tokens: numpy.ndarray
    mask: numpy.ndarray
    focus: numpy.ndarray

    def features(self) -> Dict[str, numpy.ndarray]:
        return {"text_tokens": self.tokens, "text_mask": self.mask, "text_focus": self.focus}


class TransformerTextTower(Model):
    """Token vectors of mentions and entity texts from the pipeline's transformer.

    tok2vec (Model[List[Doc], List[Floats2d]]): ``spacy-transformers.TransformerListener.v1``
        (its pooling and ``grad_factor`` apply to every text the tower encodes).
    max_tokens (int): At most this many token vectors per item (the transformer itself
        sees the whole text).
    entity_gradient (bool): Whether the loss also trains the transformer through the
        entity texts (their backward pass is most of a training step's cost); without it,
        the entity texts are encoded by the same, changing, weights without a gradient.
    """

    def __init__(self, tok2vec: Model, max_tokens: int = 96, entity_gradient: bool = True) -> None:
        _check_tok2vec(tok2vec)
        if max_tokens < 2:
            raise ValueError(
                f"TransformerTextTower: max_tokens must be 2 or more, got {max_tokens}."
            )
        super().__init__(
            "m3el-text-tower",
            _forward,
            layers=[tok2vec],
            attrs={"max_tokens": max_tokens, "entity_gradient": entity_gradient},
        )
        self._nlp: Optional[Callable[[], object]] = None

    @property
    def listener(self) -> Model:
        return self.layers[0].layers[0]

    @property
    def to_arrays(self) -> Model:
        """spacy-transformers' ``trfs2arrays``: wordpieces pooled onto spaCy tokens."""
        return self.layers[0].layers[-1]

    # The shared transformer ---------------------------------------------------

    def attach(self, nlp) -> None:
        """Remember the pipeline whose transformer component the tower reads."""
        self._nlp = weakref.ref(nlp)

    def upstream(self):
        """The spacy-transformers ``Transformer`` component the listener listens to: the one
        it is registered with, else the one its ``upstream`` names."""
        from spacy_transformers import Transformer

        if self._nlp is not None and self._nlp() is None:
            raise ValueError(
                "The linker's pipeline no longer exists, and with it the transformer its text "
                "tower reads. Keep the Language object alive, or attach the linker to its new "
                "pipeline: linker.model.attach_pipeline(nlp)."
            )
        nlp = self._nlp() if self._nlp is not None else None
        wanted = self.listener.upstream_name
        pipes = [(n, p) for n, p in nlp.components if isinstance(p, Transformer)] if nlp else []
        for _, pipe in pipes:
            if self.listener in pipe.listeners:
                return pipe
        for name, pipe in pipes:
            if wanted in ("*", name):
                return pipe
        raise ValueError(
            f"The linker's text tower listens to the transformer component {wanted!r}, which "
            "is not in its pipeline. Add a spacy-transformers 'transformer' component before "
            "the linker (see configs/demo-trf.cfg), or use spacy_m3el.M3EL.v2 with "
            "spacy_m3el.CLIPEncoder.v1, whose text tower is CLIP's own."
        )

    @property
    def width(self) -> int:
        """The transformer's hidden width (known once it is initialized or loaded)."""
        return self.upstream().model.get_dim("nO")

    def parameters(self) -> List[object]:
        """The shared transformer's torch parameters."""
        model = self.upstream().model
        return [p for node in model.walk() for shim in node.shims for p in shim._model.parameters()]

    def state_key(self) -> Tuple[float, ...]:
        """Changes whenever the transformer's weights change (cheap: a strided sample of
        each tensor; thinc's optimizer updates the weights in place, and an update moves
        practically every value)."""
        return tuple(
            float(p.detach().reshape(-1)[:: max(1, p.numel() // 64)].sum())
            for p in self.parameters()
        )

    def update_digest(self, digest: "hashlib._Hash") -> None:
        """Add the transformer's weights to a fingerprint."""
        for parameter in self.parameters():
            digest.update(parameter.detach().cpu().contiguous().numpy().tobytes())

    def trains_upstream(self) -> bool:
        """Whether the transformer ran in this training step (not frozen): the listener holds
        its batch until the linker's backprop."""
        return self.listener._batch_id is not None

    # Features -----------------------------------------------------------------

    def mention_arrays(
        self, windows: Sequence[MentionWindow], batch_docs: Optional[List[Doc]], is_train: bool
    ) -> Tuple[TokenArrays, Backprop]:
        """Per mention: its own tokens, then its context window.

        batch_docs (Optional[List[Doc]]): In training, every doc of the step in order (the
            listener checks it got the transformer's batch); None at prediction. A doc the
            transformer has not annotated (a KB entity as a mention, a doc linked outside
            the pipeline) is encoded through the transformer here.
        """
        self.upstream()  # a clear error when the pipeline has no transformer
        if batch_docs is None:
            batch_docs = _unique([w.span.doc for w in windows])
            heard = [doc for doc in batch_docs if doc._.trf_data is not None or not len(doc)]
        else:
            heard = batch_docs
        known = {id(doc) for doc in heard}
        unheard = _unique([w.span.doc for w in windows if id(w.span.doc) not in known])
        train_upstream = is_train and self.trains_upstream()
        heard_vectors, bp_heard = self.layers[0](heard, is_train) if heard else ([], None)
        heard_vectors = [self.ops.to_numpy(v) for v in heard_vectors]
        other_vectors, bp_other = self._encode_docs(unheard, train_upstream)
        vectors = dict(zip(map(id, heard), heard_vectors))
        vectors.update(zip(map(id, unheard), other_vectors))
        rows = [_window_rows(w, self.attrs["max_tokens"]) for w in windows]
        arrays, scatter = _gather([vectors[id(w.span.doc)] for w in windows], rows)

        def backprop(d_tokens: numpy.ndarray) -> None:
            d_by_doc: Dict[int, numpy.ndarray] = {}
            for window, d in zip(windows, scatter(d_tokens)):
                key = id(window.span.doc)
                d_by_doc[key] = d_by_doc[key] + d if key in d_by_doc else d
            if bp_other is not None:
                bp_other([d_by_doc[id(doc)] for doc in unheard])
            xp = self.ops
            # Last: the last listener's backprop runs the transformer's backward pass.
            if bp_heard is not None:
                bp_heard(
                    [
                        xp.asarray2f(d_by_doc.get(id(doc), numpy.zeros_like(vectors)))
                        for doc, vectors in zip(heard, heard_vectors)
                    ]
                )

        return arrays, backprop

    def text_arrays(self, texts: Sequence[str], is_train: bool) -> Tuple[TokenArrays, Backprop]:
        """Per text (``"<name> [SEP] <description>"``): its tokens, the name's as focus."""
        make_doc = self.upstream_make_doc()
        docs = [make_doc(text) for text in texts]
        train = (
            is_train
            and self.attrs["entity_gradient"]
            and self.to_arrays.attrs.get("grad_factor", 1.0) != 0
            and self.trains_upstream()
        )
        vectors, bp_docs = self._encode_docs(docs, train)
        rows = []
        for doc, text in zip(docs, texts):
            name_end = len(text.split(SEPARATOR, 1)[0])
            n_focus = max(1, sum(1 for token in doc if token.idx < name_end))
            tokens = list(range(min(len(doc), self.attrs["max_tokens"])))
            rows.append((tokens, min(n_focus, len(tokens))))
        arrays, scatter = _gather(vectors, rows)

        def backprop(d_tokens: numpy.ndarray) -> None:
            if bp_docs is not None:
                bp_docs(scatter(d_tokens))

        return arrays, backprop

    def skip_batch(self, batch_docs: List[Doc]) -> None:
        """Take the listener's batch and give no gradient (a step without mentions to learn
        from): the linker is the last listener, whose backprop runs the transformer's
        backward pass with the other listeners' gradients."""
        if self.trains_upstream():
            vectors, backprop = self.layers[0](batch_docs, True)
            backprop([self.ops.alloc2f(*v.shape) for v in vectors])

    def upstream_make_doc(self) -> Callable[[str], Doc]:
        nlp = self._nlp() if self._nlp is not None else None
        if nlp is None:
            self.upstream()  # raises the error that says what to add
        return nlp.make_doc

    def _encode_docs(
        self, docs: List[Doc], is_train: bool
    ) -> Tuple[List[numpy.ndarray], Optional[Callable[[List[numpy.ndarray]], None]]]:
        """Token vectors of docs through the transformer model itself (with its backprop
        when training it)."""
        if not docs:
            return [], None
        model = self.upstream().model
        filled = [doc for doc in docs if len(doc)]
        width = model.get_dim("nO")
        if not filled:
            return [numpy.zeros((0, width), dtype="float32") for _ in docs], None
        if is_train:
            full, bp_full = model.begin_update(filled)
        else:
            full, bp_full = model.predict(filled), None
        pooled, bp_pooled = self.to_arrays(full.doc_data, is_train)
        by_doc = dict(zip(map(id, filled), map(self.ops.to_numpy, pooled)))
        vectors = [by_doc.get(id(doc), numpy.zeros((0, width), dtype="float32")) for doc in docs]
        if bp_full is None:
            return vectors, None

        def backprop(d_vectors: List[numpy.ndarray]) -> None:
            d_by_doc = dict(zip(map(id, docs), d_vectors))
            d_datas = bp_pooled([self.ops.asarray2f(d_by_doc[id(doc)]) for doc in filled])
            bp_full(full.unsplit_by_doc([list(d.tensors) for d in d_datas]))

        return vectors, backprop


def _forward(
    model: TransformerTextTower,
    X: Tuple[List[MentionWindow], Optional[List[Doc]]],
    is_train: bool,
):
    windows, batch_docs = X
    return model.mention_arrays(windows, batch_docs, is_train)


def _check_tok2vec(tok2vec: Model) -> None:
    from spacy_transformers.layers import TransformerListener

    layers = tok2vec.layers
    if len(layers) < 2 or not isinstance(layers[0], TransformerListener):
        raise ValueError(
            "spacy_m3el.TransformerTextTower.v1 needs a spacy-transformers listener as its "
            "tok2vec: set [components.m3el_linker.model.text_tower.tok2vec] to "
            '@architectures = "spacy-transformers.TransformerListener.v1".'
        )


def _unique(docs: Sequence[Doc]) -> List[Doc]:
    return list({id(doc): doc for doc in docs}.values())


def _window_rows(window: MentionWindow, max_tokens: int) -> Tuple[List[int], int]:
    own = list(range(window.span.start, window.span.end))[: max_tokens // 2]
    context = list(range(window.start, window.end))[: max_tokens - len(own)]
    return own + context, len(own)


def _gather(
    vectors: Sequence[numpy.ndarray], rows: Sequence[Tuple[List[int], int]]
) -> Tuple[TokenArrays, Callable[[numpy.ndarray], List[numpy.ndarray]]]:
    """Pick token rows per item into padded arrays; the backprop scatters gradients back."""
    width = max((v.shape[1] for v in vectors if v.ndim == 2 and v.shape[0]), default=0)
    length = max((len(r) for r, _ in rows), default=0)
    n = len(rows)
    tokens = numpy.zeros((n, max(length, 1), width), dtype="float32")
    mask = numpy.zeros((n, max(length, 1)), dtype=bool)
    focus = numpy.zeros_like(mask)
    for i, ((index, n_focus), array) in enumerate(zip(rows, vectors)):
        if index:
            tokens[i, : len(index)] = numpy.asarray(array)[index]
        mask[i, : len(index)] = True
        focus[i, :n_focus] = True

    def scatter(d_tokens: numpy.ndarray) -> List[numpy.ndarray]:
        d_tokens = numpy.asarray(d_tokens, dtype="float32")
        out = []
        for i, ((index, _), array) in enumerate(zip(rows, vectors)):
            d = numpy.zeros(array.shape, dtype="float32")
            numpy.add.at(d, index, d_tokens[i, : len(index)])
            out.append(d)
        return out

    return TokenArrays(tokens, mask, focus), scatter
