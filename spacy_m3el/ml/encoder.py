"""Hugging Face CLIP as the M3EL encoder: global and local text/image features."""

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy
import torch
from torch import nn

from .augment import JitterGroups, jitter_groups
from .pixels import PreparedPixels, finish_pixels
from .token_ids import TokenIds


def _single_thread_after_fork() -> None:
    # torch's OpenMP pool does not survive fork: a forked child (nlp.pipe with
    # n_process > 1 on Linux) that runs a parallel op hangs. One thread per
    # worker process is also the right setting for multiprocess inference.
    torch.set_num_threads(1)


os.register_at_fork(after_in_child=_single_thread_after_fork)


TOKENIZER_FILES = (
    "vocab.json",
    "merges.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
)


@dataclass
class EncoderOutput:
    """Encoder features for a batch of n items (mentions or entities).

    text_global (Tensor[n, Pt]): L2-normalised projected text embedding.
    text_tokens (Tensor[n, L, Wt]): last hidden states of the text tower.
    text_mask (BoolTensor[n, L]): True for real (non-padding) tokens.
    image_global (Tensor[n, Pi]): L2-normalised projected image embedding (zeros without image).
    image_tokens (Tensor[n, K, Wv]): last hidden states of the vision tower (CLS + patches).
    has_image (BoolTensor[n]): whether item i has an image.
    """

    text_global: torch.Tensor
    text_tokens: torch.Tensor
    text_mask: torch.Tensor
    image_global: torch.Tensor
    image_tokens: torch.Tensor
    has_image: torch.Tensor


def pool_focus(text_tokens: torch.Tensor, text_focus: torch.Tensor) -> torch.Tensor:
    """The mean of each item's focus tokens (a mention's own, an entity's name) [n, W]."""
    focus = text_focus.to(text_tokens.dtype).unsqueeze(-1)
    return (text_tokens * focus).sum(1) / focus.sum(1).clamp(min=1.0)


def require_text_width(expected: int, width: int) -> None:
    """Fail with a fix when a text tower's vectors have ``width`` values, not ``expected``
    (the ``text_width`` of an encoder that takes its text features from a text tower)."""
    if width != expected:
        raise ValueError(
            f"The text tower gives vectors of width {width}, but the encoder expects "
            f"text_width = {expected}: set text_width = {width} in "
            "[components.m3el_linker.model.encoder]."
        )


class CLIPEncoder(nn.Module):
    """A CLIP checkpoint (hub name or local folder) giving M3EL's four features.

    The CLIP weights are attached by :meth:`load_pretrained` (at
    ``initialize``) or :meth:`restore` (when a saved pipeline is loaded); the
    widths are fixed by the config so the rest of the network can be built
    before either happens.

    name (str): Hub name or local path of the checkpoint.
    text_width (int): Hidden width of the text tower.
    vision_width (int): Hidden width of the vision tower.
    projection_dim (int): Width of CLIP's joint embedding space.
    max_length (int): Maximum number of text tokens (longer texts are truncated).
    """

    uses_tokenizer = True

    def __init__(
        self,
        name: str,
        *,
        text_width: int,
        vision_width: int,
        projection_dim: int,
        max_length: int = 40,
    ):
        super().__init__()
        self.name = name
        self.text_width = text_width
        self.vision_width = vision_width
        self.projection_dim = projection_dim
        self.max_length = max_length
        self.clip: Optional[nn.Module] = None
        self.tokenizer = None
        self.image_processor = None
        self._blank: Optional[numpy.ndarray] = None
        self._token_ids = TokenIds()

    @property
    def is_loaded(self) -> bool:
        return self.clip is not None

    # Loading ----------------------------------------------------------------

    def load_pretrained(self, name: Optional[str] = None, **kwargs) -> None:
        """Load weights, tokenizer and image processor with ``from_pretrained``."""
        from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizerFast

        source = name or self.name
        try:
            clip = CLIPModel.from_pretrained(source, **kwargs)
            tokenizer = (
                CLIPTokenizerFast.from_pretrained(source, **kwargs) if self.uses_tokenizer else None
            )
            image_processor = CLIPImageProcessor.from_pretrained(source, **kwargs)
        except OSError as err:
            raise OSError(
                f"Could not load the CLIP checkpoint {source!r}: {err}\nGive a local folder "
                "with config.json, weights, tokenizer and preprocessor files, or a hub name "
                "on a machine that can download it."
            ) from err
        self._attach(clip, tokenizer, image_processor)

    def _attach(self, clip: nn.Module, tokenizer, image_processor) -> None:
        self._check_widths(clip.config)
        device = next(self.parameters(), None)
        self.clip = clip.to(device.device) if device is not None else clip
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self._blank = None
        self._token_ids.clear()
        self.max_length = min(self.max_length, clip.config.text_config.max_position_embeddings)

    def _check_widths(self, config) -> None:
        found = {
            "vision_width": config.vision_config.hidden_size,
            "projection_dim": config.projection_dim,
        }
        if self.uses_tokenizer:
            found["text_width"] = config.text_config.hidden_size
        wrong = {k: v for k, v in found.items() if getattr(self, k) != v}
        if wrong:
            fixes = ", ".join(f"{k} = {v}" for k, v in wrong.items())
            raise ValueError(
                f"The CLIP checkpoint {self.name!r} does not match the encoder config: set "
                f"{fixes} in the encoder section of the config "
                "([components.m3el_linker.model.encoder])."
            )

    def snapshot(self) -> tuple:
        """The loaded parts, to put back with :meth:`reinstate` if a load fails."""
        return (self.clip, self.tokenizer, self.image_processor, self.max_length)

    def reinstate(self, snapshot: tuple) -> None:
        self.clip, self.tokenizer, self.image_processor, self.max_length = snapshot

    def meta(self) -> dict:
        """Everything except the weights needed to rebuild the encoder offline."""
        if not self.is_loaded:
            return {"name": self.name, "hf_config": None}
        files = {}
        if self.tokenizer is not None:
            with tempfile.TemporaryDirectory() as tmp:
                self.tokenizer.save_pretrained(tmp)
                files = {
                    p.name: p.read_bytes() for p in Path(tmp).iterdir() if p.name in TOKENIZER_FILES
                }
        return {
            "name": self.name,
            "max_length": self.max_length,
            "hf_config": self.clip.config.to_dict(),
            # Rebuilding must use the same attention kernel, or scores differ in the last bits.
            "attn_implementation": getattr(self.clip.config, "_attn_implementation", None),
            "tokenizer_files": files,
            "image_processor": self.image_processor.to_dict(),
        }

    def restore(self, meta: dict) -> None:
        """Rebuild the (unweighted) CLIP, tokenizer and processor from :meth:`meta`."""
        if meta.get("hf_config") is None:
            self.clip = None
            return
        from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizerFast

        config = CLIPConfig.from_dict(meta["hf_config"])
        tokenizer = None
        if meta["tokenizer_files"]:
            with tempfile.TemporaryDirectory() as tmp:
                for filename, data in meta["tokenizer_files"].items():
                    (Path(tmp) / filename).write_bytes(data)
                tokenizer = CLIPTokenizerFast.from_pretrained(tmp, local_files_only=True)
        processor_dict = dict(meta["image_processor"])
        processor_dict.pop("image_processor_type", None)
        processor_dict.pop("processor_class", None)
        image_processor = CLIPImageProcessor(**processor_dict)
        clip = CLIPModel._from_config(config, attn_implementation=meta.get("attn_implementation"))
        self._attach(clip, tokenizer, image_processor)
        self.max_length = meta.get("max_length", self.max_length)

    # Featurization ----------------------------------------------------------

    def _require_loaded(self) -> None:
        if not self.is_loaded:
            raise RuntimeError(
                "The CLIP encoder has no weights yet. Call nlp.initialize() (which loads "
                f"{self.name!r}) or load a trained pipeline with spacy.load()."
            )

    def featurize(
        self,
        texts: Sequence[str],
        images: Sequence[Optional[object]],
        jitter: Optional[JitterGroups] = None,
    ) -> Dict[str, numpy.ndarray]:
        """Tokenize texts and preprocess images (PIL RGB images, :class:`PreparedPixels`
        from an image store, which only need rescaling and normalising, or None).

        jitter (Optional[JitterGroups]): (items, jitter) pairs: these items' pixels are
            jittered (training only), group by group.

        RETURNS (Dict[str, numpy.ndarray]): ``input_ids``, ``attention_mask``,
            ``pixel_values`` (only for the items that have an image) and
            ``has_image``.
        """
        self._require_loaded()
        input_ids, attention_mask = self.tokenize(texts)
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            **self.image_features(images, jitter),
        }

    def image_features(
        self, images: Sequence[Optional[object]], jitter: Optional[JitterGroups] = None
    ) -> Dict[str, numpy.ndarray]:
        """``pixel_values`` of the items that have an image (jittered as asked) and
        ``has_image`` per item."""
        self._require_loaded()
        features = {
            "pixel_values": self.pixel_values([image for image in images if image is not None]),
            "has_image": numpy.array([image is not None for image in images], dtype=bool),
        }
        if jitter:
            jitter_groups(features, jitter, self.image_processor.image_std)
        return features

    def tokenize(self, texts: Sequence[str]) -> Tuple[numpy.ndarray, numpy.ndarray]:
        """Token IDs and attention mask (int64 ``[n, L]``, padded to the longest text,
        truncated to ``max_length``), as the tokenizer's padded call gives them; each
        text's IDs are kept (``token_ids.TokenIds``)."""
        self._require_loaded()
        return self._token_ids(self.tokenizer, texts, self.max_length)

    def pixel_values(self, images: Sequence[object]) -> numpy.ndarray:
        """The processor's float32 ``[n, 3, H, W]`` pixels of PIL images and prepared ones."""
        if not images:
            size = self.clip.config.vision_config.image_size
            return numpy.zeros((0, 3, size, size), dtype="float32")
        prepared = [i for i, image in enumerate(images) if isinstance(image, PreparedPixels)]
        if not prepared:
            pixels = self.image_processor(images=list(images), return_tensors="np")
            return pixels["pixel_values"].astype("float32")
        done = finish_pixels(self.image_processor, [images[i].array for i in prepared])
        if len(prepared) == len(images):
            return done
        decoded = [i for i, image in enumerate(images) if not isinstance(image, PreparedPixels)]
        rest = self.image_processor(images=[images[i] for i in decoded], return_tensors="np")
        out = numpy.empty((len(images),) + done.shape[1:], dtype="float32")
        out[prepared] = done
        out[decoded] = rest["pixel_values"]
        return out

    def forward(self, input_ids, attention_mask, pixel_values, has_image) -> EncoderOutput:
        self._require_loaded()
        clip = self.clip
        text_out = clip.text_model(input_ids=input_ids, attention_mask=attention_mask)
        text_global = nn.functional.normalize(clip.text_projection(text_out.pooler_output), dim=-1)
        return self.with_images(
            text_global, text_out.last_hidden_state, attention_mask.bool(), pixel_values, has_image
        )

    def with_images(
        self,
        text_global: torch.Tensor,
        text_tokens: torch.Tensor,
        text_mask: torch.Tensor,
        pixel_values: torch.Tensor,
        has_image: torch.Tensor,
    ) -> EncoderOutput:
        """The text features plus the image features of the items that have an image
        (zeros for the others)."""
        n = text_global.shape[0]
        image_global = text_global.new_zeros((n, self.projection_dim))
        image_tokens = text_global.new_zeros((n, self.n_image_tokens, self.vision_width))
        if pixel_values.shape[0] > 0:
            embeds, tokens = self.vision_features(pixel_values)
            index = torch.nonzero(has_image, as_tuple=True)[0]
            image_global = image_global.index_copy(0, index, embeds)
            image_tokens = image_tokens.index_copy(0, index, tokens)
        return EncoderOutput(
            text_global=text_global,
            text_tokens=text_tokens,
            text_mask=text_mask,
            image_global=image_global,
            image_tokens=image_tokens,
            has_image=has_image.bool(),
        )

    @property
    def n_image_tokens(self) -> int:
        """Positions of the vision tower's output: CLS plus one per patch."""
        self._require_loaded()
        vision = self.clip.config.vision_config
        return (vision.image_size // vision.patch_size) ** 2 + 1

    def vision_features(self, pixel_values: torch.Tensor):
        """Normalised projected embeddings [n, Pi] and last hidden states [n, K, Wv] of images."""
        vision_out = self.clip.vision_model(pixel_values=pixel_values)
        embeds = nn.functional.normalize(
            self.clip.visual_projection(vision_out.pooler_output), dim=-1
        )
        return embeds, vision_out.last_hidden_state

    def blank_pixels(self) -> torch.Tensor:
        """An all-black image as the processor prepares it ([1, 3, H, W]), on the model device."""
        self._require_loaded()
        if self._blank is None:
            from PIL import Image

            size = self.clip.config.vision_config.image_size
            black = Image.new("RGB", (size, size))
            self._blank = self.image_processor(images=[black], return_tensors="np")[
                "pixel_values"
            ].astype("float32")
        weight = next(self.clip.parameters())
        return torch.from_numpy(self._blank).to(device=weight.device, dtype=weight.dtype)
