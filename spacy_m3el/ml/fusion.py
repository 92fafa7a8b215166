"""OT-MEL's multimodal fusion unit: text and image of one item aligned onto each other.

Inside a mention (and inside an entity) the image patches are carried onto
the text positions and the text tokens onto the patch positions by the
alignment (an optimal-transport plan with ``spacy_m3el.OTAlignment.v1``,
attention otherwise). Each fused sequence is soft-pooled together with the
raw sequence of the same positions; the two pooled vectors form the item's
fusion vector. The unit's score is half the dot product of the mention's and
the entity's vectors: a pure bi-encoder term, so entity vectors are cached and
retrieval searches them.
"""

from typing import Optional

import torch
from torch import nn

from .layers import NEG_INF, AlignmentFactory


class SoftPool(nn.Module):
    """A learned softmax pooling over positions: ``LN(sum_i softmax_i(w.x_i + b) x_i)``."""

    def __init__(self, width: int):
        super().__init__()
        self.score = nn.Linear(width, 1)
        self.norm = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x [n, L, h], mask [n, L] (True = real) -> [n, h]."""
        logits = self.score(x).squeeze(-1).masked_fill(~mask, NEG_INF)
        weights = logits.softmax(dim=-1) * mask.to(x.dtype)
        return self.norm((weights.unsqueeze(-1) * x).sum(dim=1))


class FusionUnit(nn.Module):
    """Fuses each item's text tokens and image patches; scores by the fused vectors.

    text_width (int): Width of the (normalised) text token features.
    image_width (int): Width of the (projected, normalised) image patch features.
    hidden_width (int): Width of the fusion.
    alignment (AlignmentFactory): Builds the two alignments (image->text, text->image).
    """

    SCORE_WEIGHT = 0.5

    def __init__(
        self, text_width: int, image_width: int, hidden_width: int, alignment: AlignmentFactory
    ):
        super().__init__()
        self.text_proj = nn.Linear(text_width, hidden_width)
        self.image_proj = nn.Linear(image_width, hidden_width)
        self.image_to_text = alignment(hidden_width)
        self.text_to_image = alignment(hidden_width)
        self.text_norm = nn.LayerNorm(hidden_width)
        self.image_norm = nn.LayerNorm(hidden_width)
        self.text_pool = SoftPool(hidden_width)
        self.image_pool = SoftPool(hidden_width)

    def side(
        self,
        text_tokens: torch.Tensor,
        text_mask: torch.Tensor,
        image_tokens: torch.Tensor,
        image_mask: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """The fusion vector [n, 2h] of each item."""
        text = self.text_proj(text_tokens)
        image = self.image_proj(image_tokens)
        if image_mask is None:
            image_mask = torch.ones_like(image[..., 0], dtype=torch.bool)
        # Image content at the text positions, text content at the patch positions (residual).
        on_text = self.text_norm(
            self.image_to_text(text, image, image, image_mask, text_mask) + text
        )
        on_image = self.image_norm(
            self.text_to_image(image, text, text, text_mask, image_mask) + image
        )
        pooled_text = self.text_pool(
            torch.cat([text, on_text], dim=1), torch.cat([text_mask, text_mask], dim=1)
        )
        pooled_image = self.image_pool(
            torch.cat([on_image, image], dim=1), torch.cat([image_mask, image_mask], dim=1)
        )
        return torch.cat([pooled_text, pooled_image], dim=-1)
