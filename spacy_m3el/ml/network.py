"""M3ELNet: the multi-level matching network as one PyTorch module.

The network has three entry points, which the Thinc facade
(:class:`~spacy_m3el.ml.model.M3ELModel`) calls through one PyTorch wrapper
by passing the method to ``forward``:

- :meth:`M3ELNet.encode`: featurized texts/images -> side features (a flat
  dict of tensors) of mentions or entities. Entity sides can be cached.
- :meth:`M3ELNet.score_candidates`: mention side, entity side and the entity
  rows to score per mention (``entity_index`` [n, C]) -> per-unit and overall
  scores [n, C].
- :meth:`M3ELNet.loss`: a training batch -> the M3EL objective.

It also declares which terms of its score are dot products of one vector
per side (:attr:`M3ELNet.retrieval_spec`), which stage-1 retrieval searches.
"""

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import nn

from .bi_encoder import HAS_IMAGE, RetrievalPart, RetrievalSpec
from .encoder import CLIPEncoder, EncoderOutput
from .fusion import FusionUnit
from .layers import AlignmentFactory, CrossModalUnit, IntraModalUnit, pair_dot, take_rows
from .losses import intra_modal_contrastive, masked_cross_entropy
from .missing_images import MissingImageFill, UnitCombination
from .transport import auxiliary_losses

Side = Dict[str, torch.Tensor]
UNITS = ("text", "image", "t2v", "v2t", "fusion", "i2t")
# The side key of the text vector kept for retrieval when the text unit is off.
RETRIEVAL_TEXT = "retrieval.text"
IMAGE_UNITS = ("image", "t2v", "v2t", "fusion", "i2t")


@dataclass(frozen=True)
class UnitSwitches:
    """Which matching units and losses are on (for ablations).

    fusion is OT-MEL's multimodal fusion unit; late_interaction=False keeps only
    the global-to-global terms of the text and image units (a dual encoder); i2t
    matches the mention's image with the entity's text in CLIP's joint space (the
    score CLIP itself is trained for), so an entity whose description says what
    its pictures show can be found by a mention's photo without training mentions.
    """

    text: bool = True
    image: bool = True
    t2v: bool = True
    v2t: bool = True
    contrastive: bool = True
    fusion: bool = False
    late_interaction: bool = True
    i2t: bool = False

    @property
    def enabled(self) -> Tuple[str, ...]:
        return tuple(unit for unit in UNITS if getattr(self, unit))

    @property
    def needs_images(self) -> bool:
        return any(getattr(self, unit) for unit in IMAGE_UNITS)


@dataclass(frozen=True)
class ContrastiveSettings:
    temperature: float = 0.03
    inter_weight: float = 1.0
    intra_weight: float = 0.8
    weight: float = 1.0


class M3ELNet(nn.Module):
    """Encoder + intra-modal (text, image) + cross-modal (T2V, V2T) matching.

    encoder (CLIPEncoder): gives global and local features.
    alignment (AlignmentFactory): builds the token alignment module of a width.
    hidden_width (int): width of the matching units (96 in the paper).
    image_width (int): width the image features are projected to (96).
    units (UnitSwitches): which units and losses are on.
    contrastive (ContrastiveSettings): ICL temperature and weights.
    csra_lambda (float): residual weight of the CSRA pooling heads.
    missing_images (str): what image-less items get (see ``ml.missing_images``).
    """

    def __init__(
        self,
        encoder: CLIPEncoder,
        alignment: AlignmentFactory,
        *,
        hidden_width: int = 96,
        image_width: int = 96,
        units: UnitSwitches = UnitSwitches(),
        contrastive: ContrastiveSettings = ContrastiveSettings(),
        csra_lambda: float = 1.0,
        missing_images: str = "mask",
    ):
        super().__init__()
        if not units.enabled:
            raise ValueError(f"At least one matching unit ({', '.join(UNITS)}) must be enabled.")
        self.encoder = encoder
        self.units = units
        self.contrastive = contrastive
        text_global, text_tokens = encoder.projection_dim, encoder.text_width
        self.image_global_fc = nn.Linear(encoder.projection_dim, image_width)
        self.image_tokens_fc = nn.Linear(encoder.vision_width, image_width)
        self.norm_text_global = nn.LayerNorm(text_global)
        self.norm_text_tokens = nn.LayerNorm(text_tokens)
        self.norm_image_global = nn.LayerNorm(image_width)
        self.norm_image_tokens = nn.LayerNorm(image_width)
        late = units.late_interaction
        self.text_unit = (
            IntraModalUnit(text_global, text_tokens, hidden_width, alignment, late)
            if units.text
            else None
        )
        self.image_unit = (
            IntraModalUnit(image_width, image_width, hidden_width, alignment, late)
            if units.image
            else None
        )
        self.fusion_unit = (
            FusionUnit(text_tokens, image_width, hidden_width, alignment) if units.fusion else None
        )
        self.cross_unit = (
            CrossModalUnit(
                text_global, text_tokens, image_width, hidden_width, alignment, csra_lambda
            )
            if units.t2v or units.v2t
            else None
        )
        self.missing_images = MissingImageFill(
            missing_images, encoder.projection_dim, encoder.vision_width
        )
        # The mention image's joint-space vector for the i2t unit (the entity side
        # reuses the text unit's normalised text vector).
        self.norm_image_joint = nn.LayerNorm(text_global) if units.i2t else None
        self.combine = UnitCombination(units.enabled, calibrated=missing_images == "calibrated")

    def forward(self, method: Callable[..., Any], **inputs) -> Any:
        """Run one of the entry points (``M3ELNet.encode``, ``.score_candidates``, ``.loss``)."""
        if method not in ENTRY_POINTS:
            names = ", ".join(f"M3ELNet.{m.__name__}" for m in ENTRY_POINTS)
            raise ValueError(f"Unknown task {method!r}: pass one of {names}.")
        return method(self, **inputs)

    @property
    def retrieval_spec(self) -> RetrievalSpec:
        """The dot-product terms of :meth:`score_candidates`' sum, as side keys and weights.

        The sum of these terms over the units available for a pair is the
        ``"bi_encoder"`` part of the score; with the text unit off, the text
        global vector is added for retrieval only.
        """
        parts: List[RetrievalPart] = []
        if self.text_unit is None:
            parts.append(RetrievalPart(RETRIEVAL_TEXT, 1.0, in_score=False))
        else:
            parts.append(RetrievalPart("text.g", self.text_unit.global_weight))
        if self.image_unit is not None:
            parts.append(RetrievalPart("image.g", self.image_unit.global_weight, needs_image=True))
        for unit in ("t2v", "v2t"):
            if getattr(self.units, unit):
                parts.append(RetrievalPart(f"cross.{unit}", 1.0, needs_image=True))
        if self.fusion_unit is not None:
            parts.append(RetrievalPart("fusion.f", FusionUnit.SCORE_WEIGHT, needs_image=True))
        if self.norm_image_joint is not None:
            parts.append(RetrievalPart("i2t", 1.0, needs_image=True))
        return RetrievalSpec(tuple(parts))

    # Sides -----------------------------------------------------------------

    def encode(self, role: str, features: Dict[str, torch.Tensor]) -> Side:
        """Featurized inputs -> side features of mentions (role "mention") or entities."""
        return self.side(self.encoder(**features), role)

    def side(self, out: EncoderOutput, role: str) -> Side:
        if role not in ("mention", "entity"):
            raise ValueError(f"role must be 'mention' or 'entity', got {role!r}")
        if self.units.needs_images:
            out = self.missing_images(out, self.encoder)
        text_g = self.norm_text_global(out.text_global)
        text_t = self.norm_text_tokens(out.text_tokens)
        image_g = self.norm_image_global(self.image_global_fc(out.image_global))
        image_t = self.norm_image_tokens(self.image_tokens_fc(out.image_tokens))
        side: Side = {HAS_IMAGE: out.has_image}
        if self.text_unit is None:
            # Retrieval still needs a text vector when the text unit is switched off.
            side[RETRIEVAL_TEXT] = text_g
        for prefix, unit, args in (
            ("text", self.text_unit, (text_g, text_t, out.text_mask)),
            (
                "image",
                self.image_unit,
                (image_g, image_t, torch.ones_like(image_t[..., 0], dtype=torch.bool)),
            ),
        ):
            if unit is not None:
                parts = unit.mention_side(*args) if role == "mention" else unit.entity_side(*args)
                side.update({f"{prefix}.{key}": value for key, value in parts.items()})
        if self.cross_unit is not None:
            contexts = self.cross_unit.side(
                text_g, text_t, out.text_mask, image_g, image_t, self.units.t2v, self.units.v2t
            )
            side.update({f"cross.{key}": value for key, value in contexts.items()})
        if self.fusion_unit is not None:
            side["fusion.f"] = self.fusion_unit.side(text_t, out.text_mask, image_t)
        if self.norm_image_joint is not None:
            joint = self.norm_image_joint(out.image_global) if role == "mention" else text_g
            side["i2t"] = joint
        return side

    # Scores ----------------------------------------------------------------

    def score_candidates(
        self,
        mentions: Side,
        entities: Side,
        entity_index: Optional[torch.Tensor],
        columns: bool = False,
    ) -> Dict[str, torch.Tensor]:
        """Scores of each mention i against the entities ``entity_index[i]``.

        entity_index (Optional[LongTensor[n, C]]): rows of ``entities`` to score per
            mention; None scores every mention against every row (C = all rows), without
            gathering copies of the entities.
        RETURNS (Dict[str, Tensor[n, C]]): one entry per enabled unit, ``"<unit>.ok"``
            availability masks for image units, the overall ``"score"``
            (``UnitCombination``: the mean of the units available for each pair,
            or with the "calibrated" policy the calibrated mean over all units) and,
            with ``columns``, ``"columns"`` [n, C, units]: the per-unit values that
            score averages (``UnitCombination.columns``).
        """
        both_images = mentions[HAS_IMAGE].unsqueeze(1) & take_rows(
            entities[HAS_IMAGE], entity_index
        )
        scores: Dict[str, torch.Tensor] = {}
        for unit in self.units.enabled:
            bi_term, late = self._unit_terms(unit, mentions, entities, entity_index)
            scores[unit] = bi_term if late is None else bi_term + late
            scores[f"{unit}.ok"] = (
                both_images if unit in IMAGE_UNITS else torch.ones_like(both_images)
            )
        available = {unit: scores[f"{unit}.ok"] for unit in self.units.enabled}
        scores["score"] = self.combine(scores, available)
        if columns:
            scores["columns"] = self.combine.columns(scores, available)
        return scores

    def bi_encoder_score(
        self, mentions: Side, entities: Side, entity_index: Optional[torch.Tensor]
    ) -> torch.Tensor:
        """The dot-product terms of the units available for each pair, summed ([n, C]).

        This is the part of the score that :attr:`retrieval_spec` turns into
        vectors; the score is ``(bi_encoder + late interaction) / units``.
        """
        both_images = mentions[HAS_IMAGE].unsqueeze(1) & take_rows(
            entities[HAS_IMAGE], entity_index
        )
        total = torch.zeros(both_images.shape, device=both_images.device)
        for unit in self.units.enabled:
            bi_term, _ = self._unit_terms(unit, mentions, entities, entity_index)
            total = total + (bi_term * both_images if unit in IMAGE_UNITS else bi_term)
        return total

    def _unit_terms(
        self, unit: str, mentions: Side, entities: Side, entity_index: Optional[torch.Tensor]
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """A unit's weighted dot-product term and its late-interaction term (or None)."""
        if unit in ("text", "image"):
            module = self.text_unit if unit == "text" else self.image_unit
            return module.score_parts(_sub(mentions, unit), _sub(entities, unit), entity_index)
        key, weight = {"fusion": ("fusion.f", FusionUnit.SCORE_WEIGHT), "i2t": ("i2t", 1.0)}.get(
            unit, (f"cross.{unit}", 1.0)
        )
        dot = pair_dot(mentions[key], take_rows(entities[key], entity_index))
        return weight * dot, None

    def score_matrix(self, mentions: Side, entities: Side) -> Dict[str, torch.Tensor]:
        """All-pairs scores, each of shape [B, N]."""
        return self.score_candidates(mentions, entities, None)

    # Training --------------------------------------------------------------

    def loss(
        self,
        mention_features: Dict[str, torch.Tensor],
        entity_features: Dict[str, torch.Tensor],
        labels: torch.Tensor,
        column_bias: Optional[torch.Tensor] = None,
    ) -> Dict[str, torch.Tensor]:
        """M3EL's objective on a batch of B mentions and N entities.

        labels (LongTensor[B]): the column of each mention's gold entity; the
            other columns (other gold entities and hard negatives) are negatives.
        column_bias (Optional[Tensor[N]]): added to every logit of an entity's column in
            the cross-entropy terms (logit adjustment: the entity's log training
            frequency, so the scores need not learn it); never part of the scores.
        RETURNS (Dict[str, Tensor]): ``"loss"`` and detached parts for logging.
        """
        auxiliary_losses(self)  # drop anything left from a forward pass outside loss()
        m_out = self.encoder(**mention_features)
        e_out = self.encoder(**entity_features)
        scores = self.score_matrix(self.side(m_out, "mention"), self.side(e_out, "entity"))
        bias = 0.0 if column_bias is None else column_bias.to(scores["score"].dtype)
        parts = {"overall": masked_cross_entropy(scores["score"] + bias, labels)}
        for unit in self.units.enabled:
            parts[unit] = masked_cross_entropy(scores[unit] + bias, labels, scores[f"{unit}.ok"])
        if self.units.contrastive:
            parts["contrastive"] = self._contrastive(m_out, e_out, labels)
        parts["distillation"], _ = auxiliary_losses(self)
        used = {key: value for key, value in parts.items() if value is not None}
        total = sum(
            value * (self.contrastive.weight if key == "contrastive" else 1.0)
            for key, value in used.items()
        )
        result = {f"loss.{key}": value.detach() for key, value in used.items()}
        result["loss"] = total
        result["score"] = scores["score"].detach()
        return result

    def _contrastive(
        self, m_out: EncoderOutput, e_out: EncoderOutput, labels: torch.Tensor
    ) -> Optional[torch.Tensor]:
        settings = dict(
            temperature=self.contrastive.temperature,
            inter_weight=self.contrastive.inter_weight,
            intra_weight=self.contrastive.intra_weight,
        )
        losses = [intra_modal_contrastive(m_out.text_global, e_out.text_global, labels, **settings)]
        if self.units.needs_images:
            losses.append(
                intra_modal_contrastive(
                    self.image_global_fc(m_out.image_global),
                    self.image_global_fc(e_out.image_global),
                    labels,
                    mention_valid=m_out.has_image,
                    entity_valid=e_out.has_image,
                    **settings,
                )
            )
        present = [loss for loss in losses if loss is not None]
        return sum(present) / len(present) if present else None


ENTRY_POINTS = (M3ELNet.encode, M3ELNet.score_candidates, M3ELNet.bi_encoder_score, M3ELNet.loss)


def _sub(side: Side, prefix: str) -> Side:
    start = prefix + "."
    return {key[len(start) :]: value for key, value in side.items() if key.startswith(start)}
