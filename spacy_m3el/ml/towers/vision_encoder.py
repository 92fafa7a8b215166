"""Any vision tower beside a pipeline's shared text transformer, with stored frozen features.

:class:`TowerVisionEncoder` is :class:`~.encoder.TowerEncoder` without a text tower of
its own: the text side arrives as token vectors from the model's text tower
(``spacy_m3el.TransformerTextTower.v1``, a listener of the pipeline's ``transformer``,
which an NER may share), and this module pools the focus tokens (the mention's own, an
entity's name) and projects them into the joint space. The image side (a pretrained
vision tower, frozen wholly or but for its last blocks, its outputs in the feature
store) is :class:`~.image_side.ImageSide`'s, as in ``TowerEncoder``.
"""

from typing import Dict, Optional, Sequence, Tuple

import numpy
import torch
from torch import nn

from ..augment import ImageJitter, JitterGroups
from ..encoder import EncoderOutput, pool_focus, require_text_width
from .image_side import ImageSide, joint_projection
from .vision import VisionTower


class TowerVisionEncoder(ImageSide, nn.Module):
    """A vision tower behind the matching network; the text side comes from a text tower.

    vision (VisionTower): Gives the image tokens (width ``vision_width``) and pooled vector.
    text_width (int): Width of the text tower's token vectors (the transformer's).
    projection_dim (int): Width of the joint space of the pooled text and image vectors.
    jitter_views (int): Stored jittered views per image with a frozen vision tower.
    """

    uses_tokenizer = False

    def __init__(
        self,
        vision: VisionTower,
        *,
        text_width: int = 384,
        projection_dim: int = 256,
        jitter_views: int = 4,
    ):
        super().__init__()
        if min(text_width, projection_dim, jitter_views) < 1:
            raise ValueError(
                "TowerVisionEncoder: text_width, projection_dim and jitter_views must be "
                f"positive, got {text_width}, {projection_dim} and {jitter_views}."
            )
        self._init_image_side(vision, projection_dim, jitter_views)
        self.text_width = text_width
        self.text_projection = joint_projection(text_width, projection_dim)

    @property
    def name(self) -> str:
        return self.vision.name

    @property
    def is_loaded(self) -> bool:
        return self.vision.is_loaded

    @property
    def stores_features(self) -> bool:
        return self.vision.stores_features

    # Loading ----------------------------------------------------------------

    def load_pretrained(self) -> None:
        """Load the vision tower's pretrained weights (offline where they are installed)."""
        self.vision.load_pretrained()
        self._weights_changed()

    def _weights_changed(self) -> None:
        self.vision.freeze()
        self.stores = {}
        self._n_tokens = None

    def snapshot(self) -> tuple:
        return self.vision.snapshot()

    def reinstate(self, snapshot: tuple) -> None:
        self.vision.reinstate(snapshot)

    def meta(self) -> dict:
        return {"vision": self.vision.meta()}

    def restore(self, meta: dict) -> None:
        """Rebuild the vision tower without weights (the state dict brings them)."""
        if set(meta) != {"vision"}:
            raise ValueError(
                "The saved encoder is not a TowerVisionEncoder's; check the config's "
                "[components.m3el_linker.model.encoder]."
            )
        self.vision.restore(meta["vision"])
        self._weights_changed()

    def frozen_state_names(self) -> Tuple[str, ...]:
        """State-dict names (relative to the encoder) of the vision tower's frozen weights."""
        return self.vision.frozen_state_names("vision.")

    def cache_key(self) -> str:
        """The frozen part's fingerprint (its weights are left out of the model's hash)."""
        return f"{self.vision.fingerprint()}|{self.jitter_views}"

    # Featurization ----------------------------------------------------------

    def featurize(
        self,
        texts: Sequence[str],
        images: Sequence[Optional[object]],
        jitter: Optional[JitterGroups] = None,
    ) -> Dict[str, numpy.ndarray]:
        raise RuntimeError(
            "TowerVisionEncoder encodes images only: its text features come from the "
            "model's text tower (M3ELModel.featurize adds them)."
        )

    def tokenize(self, texts: Sequence[str]):
        raise RuntimeError("TowerVisionEncoder has no tokenizer: the text tower tokenizes.")

    def check_text_width(self, width: int) -> None:
        """Fail with a fix when the text tower's vectors do not have ``text_width`` values."""
        require_text_width(self.text_width, width)

    def store_features(
        self,
        texts: Sequence[str],
        images: Sequence[Optional[object]],
        jitter: Optional[ImageJitter] = None,
    ) -> None:
        """Compute and store the frozen vision part's outputs of ``images`` (the texts go
        through the trained transformer, so nothing of theirs is stored)."""
        self._require_loaded()
        self.store_images(images, jitter)

    # Forward ------------------------------------------------------------------

    def forward(
        self,
        text_tokens: torch.Tensor,
        text_mask: torch.Tensor,
        text_focus: torch.Tensor,
        has_image: torch.Tensor,
        pixel_values: Optional[torch.Tensor] = None,
        image_state: Optional[torch.Tensor] = None,
        image_pooled: Optional[torch.Tensor] = None,
    ) -> EncoderOutput:
        self._require_loaded()
        pooled = pool_focus(text_tokens, text_focus)
        text_global = nn.functional.normalize(self.text_projection(pooled), dim=-1)
        return self.with_image_side(
            text_global,
            text_tokens,
            text_mask,
            has_image,
            pixel_values,
            image_state,
            image_pooled,
        )
