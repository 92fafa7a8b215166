"""CLIP's vision tower with text features from a text tower outside the module."""

from typing import Optional, Sequence

from torch import nn

from .encoder import CLIPEncoder, EncoderOutput, pool_focus, require_text_width


class CLIPVisionEncoder(CLIPEncoder):
    """The image side of a CLIP checkpoint; the text side arrives as token vectors.

    Used with a text tower (``spacy_m3el.TransformerTextTower.v1``): the tower gives
    token vectors of width ``text_width`` (the shared transformer's), a mask and the
    focus tokens (the mention's own tokens, an entity's name); this module pools the
    focus tokens and projects them to ``projection_dim`` as the text's global vector,
    like CLIP's text projection. CLIP's own text tower is dropped when the weights
    are attached, so it is neither trained nor saved.

    name (str): Hub name or local path of the CLIP checkpoint.
    text_width (int): Width of the text tower's token vectors.
    vision_width (int): Hidden width of the vision tower.
    projection_dim (int): Width of CLIP's joint embedding space.
    """

    uses_tokenizer = False

    def __init__(self, name: str, *, text_width: int, vision_width: int, projection_dim: int):
        super().__init__(
            name, text_width=text_width, vision_width=vision_width, projection_dim=projection_dim
        )
        self.text_projection = nn.Linear(text_width, projection_dim, bias=False)

    def _attach(self, clip: nn.Module, tokenizer, image_processor) -> None:
        clip.text_model = None
        clip.text_projection = None
        super()._attach(clip, None, image_processor)

    def featurize(self, texts: Sequence[str], images: Sequence[Optional[object]]):
        raise RuntimeError(
            "CLIPVisionEncoder encodes images only: its text features come from the model's "
            "text tower (M3ELModel.featurize adds them)."
        )

    def tokenize(self, texts: Sequence[str]):
        raise RuntimeError("CLIPVisionEncoder has no tokenizer: the text tower tokenizes.")

    def check_text_width(self, width: int) -> None:
        """Fail with a fix when the text tower's vectors do not have ``text_width`` values."""
        require_text_width(self.text_width, width)

    def forward(self, text_tokens, text_mask, text_focus, pixel_values, has_image) -> EncoderOutput:
        self._require_loaded()
        pooled = pool_focus(text_tokens, text_focus)
        text_global = nn.functional.normalize(self.text_projection(pooled), dim=-1)
        return self.with_images(text_global, text_tokens, text_mask.bool(), pixel_values, has_image)
