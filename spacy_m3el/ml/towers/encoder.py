"""Any vision tower and any text tower as M3EL's encoder, with stored frozen features.

:class:`TowerEncoder` gives the four features the matching network reads (text and
image, global and local) from two pretrained towers (``towers.vision``,
``towers.text``) plus two trained projections of their pooled vectors into a joint
space of ``projection_dim``. Where a tower is frozen (wholly, or all but its last
blocks), ``featurize`` looks its frozen part's output up in a
:class:`~.store.FeatureStore` (computing what is missing) and the network's forward
pass runs only the trained part, so a training step costs the matching network's
time, not the backbone's.

Image jitter with a frozen vision tower: a jittered image would be a new input every
step, so instead each image has ``jitter_views`` stored views, each one jittered with
a seed of its own (the image's content and the view number); a jittered item gets one
of them at random (numpy's global generator, so training stays deterministic).
"""

from typing import Dict, List, Optional, Sequence, Tuple

import numpy
import torch
from torch import nn

from ..augment import ImageJitter, JitterGroups, jitter_groups
from ..encoder import EncoderOutput
from ..pixels import PreparedPixels, finish_pixels, prepare_pixels
from .store import FeatureStore, content_key
from .text import HFTextTower
from .views import ImageView, choose_views, every_view, jitter_views, view_key
from .vision import VisionTower


class TowerEncoder(nn.Module):
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
        self.vision = vision
        self.text = text
        self.projection_dim = projection_dim
        self.jitter_views = jitter_views
        self.text_width = text.width
        self.vision_width = vision.width
        self.text_projection = _projection(text.pooled_width, projection_dim)
        self.image_projection = _projection(vision.pooled_width, projection_dim)
        self.stores: Dict[str, FeatureStore] = {}
        self.store_root = None
        self._n_tokens: Optional[int] = None
        # Loaded weights (a saved pipeline's) change what the frozen parts compute.
        self.register_load_state_dict_post_hook(lambda module, _: module._weights_changed())

    @property
    def name(self) -> str:
        """The towers' names (the vision tower's first)."""
        return f"{self.vision.name}+{self.text.name}"

    @property
    def is_loaded(self) -> bool:
        return self.text.is_loaded

    @property
    def image_processor(self):
        return self.vision.image_processor

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

    # Feature stores -----------------------------------------------------------

    def attach_feature_store(self, root) -> None:
        """Keep the frozen features in folders under ``root`` (None: in memory)."""
        for store in self.stores.values():
            store.flush()
        self.store_root = root
        self.stores = {}

    def store(self, tower: str) -> FeatureStore:
        """The feature store of ``"text"`` or ``"vision"`` (made for the current weights)."""
        if tower not in self.stores:
            module = self.text if tower == "text" else self.vision
            path = None if self.store_root is None else f"{self.store_root}/{tower}"
            fingerprint = content_key(module.fingerprint())[:20]
            self.stores[tower] = FeatureStore(fingerprint, path)
        return self.stores[tower]

    def flush_stores(self) -> None:
        for store in self.stores.values():
            store.flush()

    # Featurization ----------------------------------------------------------

    def _require_loaded(self) -> None:
        if not self.is_loaded:
            raise RuntimeError(
                "The encoder has no weights yet. Call nlp.initialize() (which loads the "
                "pretrained towers) or load a trained pipeline with spacy.load()."
            )

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

    def image_features(
        self, images: Sequence[Optional[object]], jitter: Optional[JitterGroups] = None
    ) -> Dict[str, numpy.ndarray]:
        """``pixel_values`` (jittered as asked), or with a frozen vision tower
        ``image_state`` and maybe ``image_pooled`` (stored views where jittered), for
        the items that have an image; ``has_image`` per item."""
        has_image = numpy.array([image is not None for image in images], dtype=bool)
        present = [image for image in images if image is not None]
        processor = self.image_processor
        if not self.vision.stores_features:
            features = {"pixel_values": self.pixel_values(present), "has_image": has_image}
            if jitter:
                jitter_groups(features, jitter, processor.image_std)
            return features
        prepared = self._prepared(present)
        rows = self._image_states(prepared, choose_views(has_image, jitter, self.jitter_views))
        pooled_size = self.vision.pooled_width if self.vision.stores_pooled else 0
        shape = (len(rows),) + self.vision.state_shape
        features = {"has_image": has_image}
        features["image_state"] = (
            numpy.stack([r[pooled_size:] for r in rows]).astype("f4").reshape(shape)
            if rows
            else numpy.zeros(shape, dtype="float32")
        )
        if pooled_size:
            features["image_pooled"] = (
                numpy.stack([r[:pooled_size] for r in rows]).astype("f4")
                if rows
                else numpy.zeros((0, pooled_size), dtype="float32")
            )
        return features

    def _image_states(
        self, prepared: List[numpy.ndarray], views: List[ImageView]
    ) -> List[numpy.ndarray]:
        """The stored rows of prepared images, each in its view (computed if missing)."""
        keys = [view_key(image, view) for image, view in zip(prepared, views)]
        processor = self.image_processor

        def compute(index: List[int]) -> List[numpy.ndarray]:
            images = [prepared[i] for i in index]
            pixels = finish_pixels(processor, images)
            pixels = jitter_views(pixels, images, [views[i] for i in index], processor.image_std)
            return self.vision.frozen_rows(pixels)

        return self.store("vision").rows(keys, compute)

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
        present = [image for image in images if image is not None]
        if not (self.vision.stores_features and present):
            return
        prepared = self._prepared(present)
        if jitter is None:
            self._image_states(prepared, [(None, 0)] * len(prepared))
        else:
            views = every_view(len(prepared), jitter, self.jitter_views)
            self._image_states(prepared * (self.jitter_views + 1), views)

    def _prepared(self, images: Sequence[object]) -> List[numpy.ndarray]:
        """Resized and cropped uint8 ``[3, S, S]`` pixels (an image store's as they are)."""
        decoded = [i for i, image in enumerate(images) if not isinstance(image, PreparedPixels)]
        done = prepare_pixels(self.image_processor, [images[i] for i in decoded])
        result = [image.array if isinstance(image, PreparedPixels) else None for image in images]
        for i, array in zip(decoded, done):
            result[i] = array
        return result

    def pixel_values(self, images: Sequence[object]) -> numpy.ndarray:
        """The processor's float32 ``[n, 3, S, S]`` pixels of PIL images and prepared ones."""
        side = self.vision.input_size
        if not images:
            return numpy.zeros((0, 3, side, side), dtype="float32")
        return finish_pixels(self.image_processor, self._prepared(images))

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
        n = text_global.shape[0]
        image_global = text_global.new_zeros((n, self.projection_dim))
        image_tokens = text_global.new_zeros((n, self.n_image_tokens, self.vision_width))
        index = torch.nonzero(has_image, as_tuple=True)[0]
        if len(index):
            if image_state is None:
                tokens, image_pooled_out = self.vision(pixel_values)
            else:
                tokens, image_pooled_out = self.vision.trained_forward(image_state, image_pooled)
            embeds = nn.functional.normalize(self.image_projection(image_pooled_out), dim=-1)
            image_global = image_global.index_copy(0, index, embeds)
            image_tokens = image_tokens.index_copy(0, index, tokens.to(image_tokens.dtype))
        return EncoderOutput(
            text_global=text_global,
            text_tokens=text_tokens,
            text_mask=attention_mask.bool(),
            image_global=image_global,
            image_tokens=image_tokens,
            has_image=has_image.bool(),
        )

    @property
    def n_image_tokens(self) -> int:
        """Local image tokens per image (found by running a blank image once)."""
        if self._n_tokens is None:
            with torch.no_grad():
                tokens, _ = self.vision(self.blank_pixels())
            self._n_tokens = int(tokens.shape[1])
        return self._n_tokens

    def vision_features(self, pixel_values: torch.Tensor):
        """Normalised projected embeddings [n, P] and tokens [n, K, Wv] of pixels."""
        tokens, pooled = self.vision(pixel_values)
        return nn.functional.normalize(self.image_projection(pooled), dim=-1), tokens

    def blank_pixels(self) -> torch.Tensor:
        """An all-black image as the processor prepares it ([1, 3, S, S])."""
        from PIL import Image

        side = self.vision.input_size
        black = finish_pixels(
            self.image_processor,
            prepare_pixels(self.image_processor, [Image.new("RGB", (side, side))]),
        )
        weight = next(self.image_projection.parameters())
        return torch.from_numpy(black).to(device=weight.device, dtype=weight.dtype)


def _projection(width: int, projection_dim: int) -> nn.Linear:
    """An affine map to the joint space; the identity when the widths agree, so a joint
    space the towers already share (CLIP's) is where training starts. The bias matters:
    pretrained features share a large common component, and only once it is removed do
    their directions tell look-alikes apart (shape probe on raw EfficientNet-Lite0
    features: 18% cosine nearest-neighbour accuracy, 73% once centred)."""
    layer = nn.Linear(width, projection_dim)
    if width == projection_dim:
        nn.init.eye_(layer.weight)
        nn.init.zeros_(layer.bias)
    return layer
