"""What the network does with a mention or entity that has no image.

In RichpediaMEL and WikiDiverse 40-50% of KB entities have no image. A policy
decides how such an item takes part in the image-dependent units
(IIMM, T2V, V2T):

- ``"mask"``: the units are skipped for pairs where either side lacks an
  image; the pair's score is the mean of the units that remain (for an
  image-less entity: the text unit alone, another scale than the mean of four).
- ``"black"``: the item gets the features of an all-black image, as the
  reference code does (its data loader substitutes a blank image).
- ``"learned"``: the item gets a learned "no image" embedding: one global
  vector and one token vector, trained with the rest of the network.
- ``"describe"``: the item's own text embedding (CLIP's joint space) stands in
  for the image's global embedding, with the learned "no image" token for
  the patches, so a mention image is matched against the entity's description.
- ``"calibrated"``: like ``"mask"``, but each unit's score gets a learned
  scale and bias and an unavailable unit a learned score, and the overall
  score is the mean over all units, so every pair is on one scale.

Filled items count as having an image for scoring and retrieval; the
intra-modal contrastive loss still uses only real images.
"""

from dataclasses import replace
from typing import Dict, Sequence

import torch
from torch import nn

from .encoder import CLIPEncoder, EncoderOutput

MISSING_IMAGE_POLICIES = ("mask", "black", "learned", "describe", "calibrated")
FILLING_POLICIES = ("black", "learned", "describe")


def check_policy(policy: str) -> str:
    """Return ``policy`` if known; else a ValueError that lists the policies."""
    if policy not in MISSING_IMAGE_POLICIES:
        raise ValueError(
            f"Unknown missing_images policy {policy!r}; use one of "
            f"{', '.join(MISSING_IMAGE_POLICIES)} (see spacy_m3el.ml.missing_images)."
        )
    return policy


class MissingImageFill(nn.Module):
    """Give image-less items image features by a policy (see the module docstring).

    policy (str): One of :data:`MISSING_IMAGE_POLICIES`.
    projection_dim (int): Width of CLIP's joint space (the image global vector).
    vision_width (int): Width of the vision tower's tokens.
    """

    def __init__(self, policy: str, projection_dim: int, vision_width: int):
        super().__init__()
        self.policy = check_policy(policy)
        if policy in ("learned", "describe"):
            self.no_image_token = nn.Parameter(torch.randn(vision_width) * 0.02)
        if policy == "learned":
            self.no_image_global = nn.Parameter(torch.randn(projection_dim) * 0.02)

    @property
    def fills(self) -> bool:
        return self.policy in FILLING_POLICIES

    def forward(self, out: EncoderOutput, encoder: CLIPEncoder) -> EncoderOutput:
        """``out`` with image features for every item; ``has_image`` then says which are usable."""
        missing = ~out.has_image
        if not self.fills or not bool(missing.any()):
            return out
        n, positions = out.image_tokens.shape[:2]
        if self.policy == "black":
            blank_global, blank_tokens = encoder.vision_features(encoder.blank_pixels())
            global_ = blank_global.expand(n, -1)
            tokens = blank_tokens.expand(n, -1, -1)
        else:
            token = self.no_image_token.to(out.image_tokens.dtype)
            tokens = token.expand(n, positions, -1)
            if self.policy == "learned":
                learned = nn.functional.normalize(self.no_image_global, dim=-1)
                global_ = learned.to(out.image_global.dtype).expand(n, -1)
            else:
                global_ = out.text_global
        keep = missing.view(-1, 1)
        return replace(
            out,
            image_global=torch.where(keep, global_, out.image_global),
            image_tokens=torch.where(keep.unsqueeze(-1), tokens, out.image_tokens),
            has_image=torch.ones_like(out.has_image),
        )


class UnitCombination(nn.Module):
    """The overall score of a pair from its unit scores.

    Without calibration: the mean of the units available for the pair. With
    calibration (the ``"calibrated"`` policy): the mean over all units of
    ``scale * score + bias`` where available and a learned score where not.

    units (Sequence[str]): The enabled units, in order.
    calibrated (bool): Whether to learn the per-unit calibration.
    """

    def __init__(self, units: Sequence[str], calibrated: bool):
        super().__init__()
        self.units = tuple(units)
        self.calibrated = calibrated
        if calibrated:
            self.scale = nn.Parameter(torch.ones(len(self.units)))
            self.bias = nn.Parameter(torch.zeros(len(self.units)))
            self.absent = nn.Parameter(torch.zeros(len(self.units)))

    def forward(
        self, scores: Dict[str, torch.Tensor], available: Dict[str, torch.Tensor]
    ) -> torch.Tensor:
        first = scores[self.units[0]]
        total = torch.zeros_like(first)
        count = torch.zeros_like(first)
        for i, unit in enumerate(self.units):
            ok = available[unit].to(first.dtype)
            if self.calibrated:
                value = self.scale[i] * scores[unit] + self.bias[i]
                total = total + value * ok + self.absent[i] * (1 - ok)
                count = count + 1
            else:
                total = total + scores[unit] * ok
                count = count + ok
        return torch.where(count > 0, total / count.clamp(min=1), torch.zeros_like(total))

    def columns(
        self, scores: Dict[str, torch.Tensor], available: Dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """Per unit, the value the overall score averages ([..., units]; their mean is
        :meth:`forward`): calibrated, the unit's calibrated score or its learned absent
        score; else the unit's score where available and the overall score where not."""
        overall = self(scores, available)
        columns = []
        for i, unit in enumerate(self.units):
            ok = available[unit].to(overall.dtype)
            if self.calibrated:
                value = (self.scale[i] * scores[unit] + self.bias[i]) * ok
                columns.append(value + self.absent[i] * (1 - ok))
            else:
                columns.append(scores[unit] * ok + overall * (1 - ok))
        return torch.stack(columns, dim=-1)
