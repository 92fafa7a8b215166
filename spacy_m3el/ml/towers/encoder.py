"""Any vision tower and any text tower as M3EL's encoder, with stored frozen features.

:class:`TowerEncoder` gives the four features the matching network reads (text and
image, global and local) from two pretrained towers (``towers.vision``,
``towers.text``) plus two trained projections of their pooled vectors into a joint
space of ``projection_dim``. Where a tower is frozen (wholly, or all but its last
blocks), ``featurize`` looks its frozen part's output up in a
:class:`~.store.FeatureStore` (computing what is missing) and the network's forward
pass runs only the trained part, so a training step costs the matching network's
time, not the backbone's.

The image half (stores, image features, stored views) is :class:`~.image_side.ImageSide`'s.
"""

from typing import Dict, Optional, Sequence, Tuple

import numpy
import torch
from torch import nn

from ..augment import ImageJitter, JitterGroups
from ..encoder import EncoderOutput
from .image_side import ImageSide, joint_projection
from .store import content_key
from .text import HFTextTower
from .vision import VisionTower


class TowerEncoder(ImageSide, nn.Module):
    """A vision tower and a text tower behind the matching network.

    vision (VisionTower): Gives the image tokens (width ``vision_width``) and pooled vector.
    text (HFTextTower): Gives the text tokens (width ``text_width``) and pooled vector.
    projection_dim (int): Width of the joint space both pooled vectors are projected to.
    jitter_views (int): Stored jittered views per image with a frozen vision tower.
    """

    uses_tokenizer = True

    def __init__(
        self,
        vision: VisionTower,
        text: HFTextTower,
        *,
        projection_dim: int = 256,
        jitter_views: int = 4,
    ):
        super().__init__()
        if projection_dim <= 0 or jitter_views < 1:
            raise ValueError(
                "TowerEncoder: projection_dim and jitter_views must be positive, got "
                f"{projection_dim} and {jitter_views}."
            )
        self._init_image_side(vision, projection_dim, jitter_views)
        self.text = text
        self.text_width = text.width
        self.text_projection = joint_projection(text.pooled_width, projection_dim)

    @property
    def name(self) -> str:
        """The towers' names (the vision tower's first)."""
        return f"{self.vision.name}+{self.text.name}"

    @property
    def is_loaded(self) -> bool:
        return self.text.is_loaded

    @property
    def stores_features(self) -> bool:
        """Whether either tower has a frozen part whose outputs are stored."""
        return self.vision.stores_features or self.text.stores_features

    @property
    def max_length(self) -> int:
        return self.text.max_length

    # Loading ----------------------------------------------------------------

    def load_pretrained(self, **kwargs) -> None:
        """Load both towers' pretrained weights (offline where they are installed)."""
        self.vision.load_pretrained()
        self.text.load_pretrained(**kwargs)
        self._weights_changed()

    def _weights_changed(self) -> None:
        self.vision.freeze()
        self.text.freeze()
        self.stores = {}
        self._n_tokens = None

    def snapshot(self) -> tuple:
        return (self.text.model, self.text.tokenizer, self.text.max_length)

    def reinstate(self, snapshot: tuple) -> None:
        self.text.model, self.text.tokenizer, self.text.max_length = snapshot

    def meta(self) -> dict:
        return {"vision": self.vision.meta(), "text": self.text.meta()}

    def restore(self, meta: dict) -> None:
        """Rebuild both towers without weights (the state dict brings them)."""
        if set(meta) != {"vision", "text"}:
            raise ValueError("The saved encoder is not a TowerEncoder's; check the config.")
        self.vision.restore(meta["vision"])
        self.text.restore(meta["text"])
        self._weights_changed()

    def frozen_state_names(self) -> Tuple[str, ...]:
        """State-dict names (relative to the encoder) of the towers' frozen weights."""
        return self.vision.frozen_state_names("vision.") + self.text.frozen_state_names("text.")

    def cache_key(self) -> str:
        """The frozen parts' fingerprints (their weights are left out of the model's hash)."""
        return f"{self.vision.fingerprint()}|{self.text.fingerprint()}|{self.jitter_views}"

    # Featurization ----------------------------------------------------------

    def tokenize(self, texts: Sequence[str]) -> Tuple[numpy.ndarray, numpy.ndarray]:
        self._require_loaded()
        return self.text.tokenize(texts)

    def featurize(
        self,
        texts: Sequence[str],
        images: Sequence[Optional[object]],
        jitter: Optional[JitterGroups] = None,
    ) -> Dict[str, numpy.ndarray]:
        """The towers' inputs: token IDs or stored text states, pixels or stored image
        states, and ``has_image``. ``jitter``: (items, jitter) groups of ``images``."""
        self._require_loaded()
        return {**self.text_features(texts), **self.image_features(images, jitter)}

    def text_features(self, texts: Sequence[str]) -> Dict[str, numpy.ndarray]:
        """``input_ids`` and ``attention_mask``, or with a frozen text tower
        ``text_state`` (padded stored states), ``attention_mask`` and maybe ``text_pooled``."""
        if not self.text.stores_features:
            ids, mask = self.tokenize(texts)
            return {"input_ids": ids, "attention_mask": mask}
        keys = [content_key("text", text) for text in texts]
        rows = self.store("text").rows(
            keys, lambda idx: self.text.frozen_rows([texts[i] for i in idx])
        )
        pooled_size = self.text.pooled_width if self.text.stores_pooled else 0
        width = self.text.width
        states = [row[pooled_size:].reshape(-1, width) for row in rows]
        length = max((len(s) for s in states), default=0)
        state = numpy.zeros((len(rows), length, width), dtype="float32")
        mask = numpy.zeros((len(rows), length), dtype="int64")
        for i, item in enumerate(states):
            state[i, : len(item)] = item
            mask[i, : len(item)] = 1
        features = {"text_state": state, "attention_mask": mask}
        if pooled_size:
            features["text_pooled"] = numpy.stack([r[:pooled_size] for r in rows]).astype("f4")
        return features

    def store_features(
        self,
        texts: Sequence[str],
        images: Sequence[Optional[object]],
        jitter: Optional[ImageJitter] = None,
    ) -> None:
        """Compute and store the frozen parts' outputs of texts and images (with
        ``jitter``, each image's ``jitter_views`` views too), for a store build."""
        self._require_loaded()
        if self.text.stores_features and texts:
            self.text_features(texts)
        self.store_images(images, jitter)

    # Forward ------------------------------------------------------------------

    def forward(
        self,
        attention_mask: torch.Tensor,
        has_image: torch.Tensor,
        input_ids: Optional[torch.Tensor] = None,
        text_state: Optional[torch.Tensor] = None,
        text_pooled: Optional[torch.Tensor] = None,
        pixel_values: Optional[torch.Tensor] = None,
        image_state: Optional[torch.Tensor] = None,
        image_pooled: Optional[torch.Tensor] = None,
    ) -> EncoderOutput:
        self._require_loaded()
        if text_state is None:
            text_tokens, pooled = self.text(input_ids, attention_mask)
        else:
            text_tokens, pooled = self.text.trained_forward(text_state, attention_mask, text_pooled)
        text_global = nn.functional.normalize(self.text_projection(pooled), dim=-1)
        return self.with_image_side(
            text_global,
            text_tokens,
            attention_mask,
            has_image,
            pixel_values,
            image_state,
            image_pooled,
        )
