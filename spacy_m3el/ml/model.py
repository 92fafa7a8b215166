"""The Thinc side of the model: :class:`M3ELModel`, a typed facade over M3ELNet.

Like spacy-transformers' ``TransformerModel``, the facade is a Thinc
``Model`` that hides its PyTorch shim: the component calls explicit methods
(:meth:`M3ELModel.encode`, :meth:`M3ELModel.score_candidates`,
:meth:`M3ELModel.fingerprint`, ...) with numpy inputs and gets numpy outputs.
As a Thinc layer, the model maps a :class:`TrainingBatch` to the loss
outputs; ``backprop`` needs no output gradient because the backward pass
starts from the loss itself.
"""

import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy
from spacy.tokens import Doc
from thinc.api import Model, PyTorchWrapper_v3

from .augment import JitterGroups
from .bi_encoder import RetrievalSpec
from .serialization import deserialize_net, serialize_net
from .shim import ROLES, NetCall, convert_inputs, convert_outputs, deterministic_torch
from .sides import SideArrays, concat_sides
from .text_tower import MentionWindow
from .token_ids import TOKEN_CACHE_SIZE

Features = Dict[str, numpy.ndarray]


@dataclass
class TrainingBatch:
    """One training step's inputs.

    mention_features (Features): Featurized mention texts and images (:meth:`M3ELModel.featurize`).
    entity_features (Features): Featurized entities: the gold entities and the negatives.
    labels (numpy.ndarray[B]): The entity row of each mention's gold entity.
    text_backprops (Dict[str, Callable]): With a text tower, its backprop per role
        ("mention", "entity"), called with the gradient of the role's ``text_tokens``.
    column_bias (Optional[numpy.ndarray[N]]): Added to each entity row's logits in the loss.
    """

    mention_features: Features
    entity_features: Features
    labels: numpy.ndarray
    text_backprops: Dict[str, Callable[[numpy.ndarray], None]] = field(default_factory=dict)
    column_bias: Optional[numpy.ndarray] = None


class M3ELModel(Model):
    """The M3EL network as a Thinc model with a typed interface.

    net (M3ELNet): The network, built from config values; the pretrained
        encoder weights are loaded by ``initialize``.
    text_tower (Optional[TransformerTextTower]): Gives the text features from the
        pipeline's shared transformer (the encoder then encodes images only).
    """

    def __init__(self, net, text_tower: Optional[Model] = None) -> None:
        wrapper = PyTorchWrapper_v3(
            net,
            convert_inputs=convert_inputs,
            convert_outputs=convert_outputs,
            serialize_model=serialize_net,
            deserialize_model=deserialize_net,
        )
        super().__init__(
            "m3el",
            _forward,
            layers=[wrapper] + ([text_tower] if text_tower is not None else []),
            init=_init,
            attrs={"encoder_name": net.encoder.name},
        )

    @property
    def net(self):
        """The PyTorch module (:class:`~spacy_m3el.ml.network.M3ELNet`)."""
        return self.layers[0].shims[0]._model

    @property
    def text_tower(self):
        """The :class:`~spacy_m3el.ml.text_tower.TransformerTextTower`, or None when the
        encoder has its own text tower."""
        return self.layers[1] if len(self.layers) > 1 else None

    def attach_pipeline(self, nlp) -> None:
        """Tell the text tower (if any) which pipeline's transformer it reads (None: keep)."""
        if self.text_tower is not None and nlp is not None:
            self.text_tower.attach(nlp)

    def state_key(self) -> Tuple[Any, ...]:
        """Cheap: changes when weights outside the network that its features depend on
        (the shared transformer's) change."""
        return self.text_tower.state_key() if self.text_tower is not None else ()

    @property
    def needs_images(self) -> bool:
        """Whether any enabled unit looks at images (if not, images are never loaded)."""
        return self.net.units.needs_images

    @property
    def token_cache_size(self) -> int:
        """How many texts' token IDs the encoder keeps."""
        return TOKEN_CACHE_SIZE

    def tokenize(self, texts: Sequence[str]) -> Tuple[numpy.ndarray, numpy.ndarray]:
        """Token IDs and attention mask of texts, as ``featurize`` gives them."""
        return self.net.encoder.tokenize(texts)

    @property
    def image_processor(self):
        """The encoder's Hugging Face image processor (None before weights are loaded)."""
        return self.net.encoder.image_processor

    @property
    def retrieval_spec(self) -> RetrievalSpec:
        """Which side features form the stage-1 retrieval vectors, and their weights."""
        return self.net.retrieval_spec

    def retrieval_vectors(self, side: SideArrays, *, query: bool = False) -> numpy.ndarray:
        """Vectors whose dot products give the bi-encoder part of the score.

        side (SideArrays): Mention (``query=True``) or entity side features.
        RETURNS (numpy.ndarray[n, D]): float32 vectors.
        """
        return self.retrieval_spec.vectors(side, query=query)

    # Inference ----------------------------------------------------------------

    def featurize(
        self,
        texts: Sequence[str],
        images: Sequence[Optional[object]],
        windows: Optional[Sequence[MentionWindow]] = None,
    ) -> Features:
        """Tokenize texts and preprocess images (PIL RGB images or None) for the network.

        windows (Optional[Sequence[MentionWindow]]): The mentions the texts describe; a
            text tower reads their docs' transformer output instead of the texts.
        """
        features, _ = self.featurize_for_update(texts, images, windows, is_train=False)
        return features

    def featurize_for_update(
        self,
        texts: Sequence[str],
        images: Sequence[Optional[object]],
        windows: Optional[Sequence[MentionWindow]] = None,
        batch_docs: Optional[List[Doc]] = None,
        *,
        is_train: bool = True,
        jitter: Optional[JitterGroups] = None,
    ) -> Tuple[Features, Optional[Callable[[numpy.ndarray], None]]]:
        """:meth:`featurize` for a training step: also the text tower's backprop (None
        without a text tower). ``batch_docs``: every doc of the step, in order;
        ``jitter``: (items, jitter) groups whose images are jittered."""
        tower = self.text_tower
        if tower is None:
            return self.net.encoder.featurize(texts, images, jitter), None
        if windows is not None:
            arrays, backprop = tower.mention_arrays(windows, batch_docs, is_train)
        else:
            arrays, backprop = tower.text_arrays(texts, is_train)
        self.net.encoder.check_text_width(arrays.tokens.shape[-1])
        return {**arrays.features(), **self.net.encoder.image_features(images, jitter)}, backprop

    def encode(
        self,
        role: str,
        texts: Sequence[str],
        images: Sequence[Optional[object]],
        batch_size: int = 64,
        windows: Optional[Sequence[MentionWindow]] = None,
    ) -> SideArrays:
        """Side features of mentions or entities, computed ``batch_size`` items at a time.

        role (str): "mention" or "entity".
        texts (Sequence[str]): One input text per item.
        images (Sequence[Optional[PIL.Image.Image]]): One image (or None) per item.
        windows (Optional[Sequence[MentionWindow]]): Per mention, the span and its context
            (read by a text tower).
        RETURNS (SideArrays): The items' side features (token arrays padded to the longest).
        """
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}")
        if len(texts) != len(images):
            raise ValueError(
                f"Got {len(texts)} texts but {len(images)} images; give one of each per item."
            )
        if not texts:
            raise ValueError("Nothing to encode: give at least one text.")
        parts = []
        for start in range(0, len(texts), max(1, batch_size)):
            stop = start + max(1, batch_size)
            part = None if windows is None else windows[start:stop]
            features = self.featurize(texts[start:stop], images[start:stop], part)
            parts.append(self.encode_features(role, features))
        return concat_sides(parts)

    def encode_features(self, role: str, features: Features) -> SideArrays:
        """Side features of one batch of featurized items (:meth:`featurize`)."""
        from .network import M3ELNet

        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}")
        return self._call(M3ELNet.encode, role=role, features=features)

    def score_candidates(
        self,
        mentions: SideArrays,
        entities: SideArrays,
        entity_index: Optional[numpy.ndarray],
        columns: bool = False,
    ) -> Dict[str, numpy.ndarray]:
        """Every part of the score of mention i against the entities ``entity_index[i]``.

        entity_index (Optional[numpy.ndarray[n, C]]): Rows of ``entities`` to score per
            mention; None scores every mention against every row.
        columns (bool): Also ``"columns"`` [n, C, units] (see :meth:`unit_scores`).
        RETURNS (Dict[str, numpy.ndarray[n, C]]): ``"score"``, one entry per
            enabled unit and ``"<unit>.ok"`` availability masks.
        """
        from .network import M3ELNet

        return self._call(
            M3ELNet.score_candidates,
            mentions=mentions,
            entities=entities,
            entity_index=_index(entity_index),
            columns=columns,
        )

    def unit_scores(
        self, mentions: SideArrays, entities: SideArrays, entity_index: Optional[numpy.ndarray]
    ) -> Tuple[numpy.ndarray, numpy.ndarray]:
        """The overall score [n, C] and, per enabled unit (``net.units.enabled`` order),
        the value that score averages [n, C, units]: the unit's score (calibrated, with
        the "calibrated" image-less policy), or where the unit cannot score the pair the
        overall score (its learned absent score when calibrated). Equal unit weights
        therefore rank as the overall score does."""
        parts = self.score_candidates(mentions, entities, entity_index, columns=True)
        return parts["score"], parts["columns"]

    def score(
        self, mentions: SideArrays, entities: SideArrays, entity_index: Optional[numpy.ndarray]
    ) -> numpy.ndarray:
        """The M3EL score of mention i against the entities ``entity_index[i]``, [n, C]."""
        return self.score_candidates(mentions, entities, entity_index)["score"]

    def bi_encoder_score(
        self, mentions: SideArrays, entities: SideArrays, entity_index: Optional[numpy.ndarray]
    ) -> numpy.ndarray:
        """The part of the score that stage-1 retrieval searches, [n, C]."""
        from .network import M3ELNet

        return self._call(
            M3ELNet.bi_encoder_score,
            mentions=mentions,
            entities=entities,
            entity_index=_index(entity_index),
        )

    def fingerprint(self) -> str:
        """A hash of the weights, the enabled units and the image-less policy (what entity
        features depend on)."""
        net = self.net
        digest = hashlib.sha256(repr(net.units).encode("utf8"))
        digest.update(f"missing_images={net.missing_images.policy}".encode("utf8"))
        if self.text_tower is not None:
            self.text_tower.update_digest(digest)
        for name, module in net.named_modules():
            if hasattr(module, "cache_key"):  # e.g. OT settings, a teacher or a student
                digest.update(f"{name}={module.cache_key()}".encode("utf8"))
        # Frozen tower weights are in their cache_key() above; hashing them every call is slow.
        frozen = {f"encoder.{n}" for n in getattr(net.encoder, "frozen_state_names", tuple)()}
        for name, tensor in sorted(net.state_dict().items()):
            if name in frozen:
                continue
            digest.update(name.encode("utf8"))
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()

    def _call(self, method: Callable[..., Any], **inputs) -> Any:
        return self.layers[0].predict(NetCall(method, inputs))

    # Training -----------------------------------------------------------------

    def finish_update(self, optimizer) -> None:
        """Apply the optimizer, then move the parameters back into torch's memory.

        Thinc's optimizer leaves each parameter in a tensor that shares a numpy
        array's memory. BLAS kernels may round differently depending on memory
        alignment, so without the copy a trained model and the same model loaded
        from disk give scores that differ in the last bits.
        """
        super().finish_update(optimizer)
        for parameter in self.net.parameters():
            if parameter.requires_grad:  # frozen towers' weights never move
                parameter.data = parameter.data.clone()


def _forward(
    model: M3ELModel, batch: TrainingBatch, is_train: bool
) -> Tuple[Dict[str, Any], Callable[[Any], None]]:
    from .network import M3ELNet

    call = NetCall(
        M3ELNet.loss,
        {
            "mention_features": batch.mention_features,
            "entity_features": batch.entity_features,
            "labels": numpy.asarray(batch.labels, dtype="int64"),
        },
    )
    if batch.column_bias is not None:
        call.inputs["column_bias"] = numpy.asarray(batch.column_bias, dtype="float32")
    with deterministic_torch():
        outputs, backprop_net = model.layers[0](call, is_train)

    def backprop(_: Any = None) -> None:
        with deterministic_torch():
            d_text = backprop_net(None)
        # The entities first: the mentions' listener backprop (the last listener's) runs the
        # transformer's backward pass.
        for role in ("entity", "mention"):
            if role in batch.text_backprops:
                batch.text_backprops[role](d_text[role])

    return outputs, backprop


def _index(entity_index: Optional[numpy.ndarray]) -> Optional[numpy.ndarray]:
    return None if entity_index is None else numpy.asarray(entity_index, dtype="int64")


def _init(model: M3ELModel, X: Any = None, Y: Any = None) -> None:
    model.net.encoder.load_pretrained()


def build_m3el_model(
    encoder,
    alignment: Callable[[int], Any],
    *,
    hidden_width: int,
    image_width: int,
    units: Tuple[bool, ...],
    contrastive: Tuple[float, float, float, float],
    csra_lambda: float,
    missing_images: str = "mask",
    text_tower: Optional[Model] = None,
) -> M3ELModel:
    """Build the network from config values and wrap it; ``initialize`` loads the encoder.

    units (Tuple[bool, ...]): The text, image, t2v and v2t units, the contrastive loss,
        and optionally the fusion unit, late interaction and i2t (``UnitSwitches`` order).
    contrastive (Tuple[float, ...]): Temperature, inter- and inner-source weights, weight.
    missing_images (str): The policy for image-less items (``ml.missing_images``).
    text_tower (Optional[Model]): A text tower (the encoder must then take text features).
    """
    from .network import ContrastiveSettings, M3ELNet, UnitSwitches

    settings = (("hidden_width", hidden_width), ("image_width", image_width))
    for key, value in settings + (("contrastive_temperature", contrastive[0]),):
        if value <= 0:
            raise ValueError(f"spacy_m3el.M3EL: {key} must be positive, got {value}.")
    net = M3ELNet(
        encoder,
        alignment,
        hidden_width=hidden_width,
        image_width=image_width,
        units=UnitSwitches(*units),
        contrastive=ContrastiveSettings(*contrastive),
        csra_lambda=csra_lambda,
        missing_images=missing_images,
    )
    return M3ELModel(net, text_tower)
