"""Registered functions of the model with a text tower (thin, like ``registrations``).

``spacy_m3el.M3EL.v3`` is ``spacy_m3el.M3EL.v2`` plus an optional text tower; the text
tower reads the pipeline's shared spacy-transformers component, and the encoder
then encodes images only.
"""

from typing import Any, Callable, Optional

from spacy.util import registry
from thinc.api import Model


@registry.architectures("spacy_m3el.M3EL.v3")
def build_m3el_v3(
    encoder: Any,
    alignment: Callable[[int], Any],
    text_tower: Optional[Model] = None,
    hidden_width: int = 96,
    image_width: int = 96,
    use_text_unit: bool = True,
    use_image_unit: bool = True,
    use_t2v_unit: bool = True,
    use_v2t_unit: bool = True,
    use_contrastive_loss: bool = True,
    contrastive_temperature: float = 0.03,
    contrastive_inter_weight: float = 1.0,
    contrastive_intra_weight: float = 0.8,
    contrastive_weight: float = 1.0,
    csra_lambda: float = 1.0,
    missing_images: str = "describe",
    use_fusion_unit: bool = False,
    use_late_interaction: bool = True,
    use_i2t_unit: bool = False,
) -> Model:
    """The M3EL network as a Thinc model (``M3ELModel``); see ``spacy_m3el.M3EL.v2`` for
    the settings it shares.

    text_tower (Optional[Model]): ``spacy_m3el.TransformerTextTower.v1``: text features
        from the pipeline's transformer (with ``spacy_m3el.CLIPVisionEncoder.v1`` or
        ``spacy_m3el.TowerVisionEncoder.v1`` as the encoder); None: the encoder's own text
        tower (``spacy_m3el.CLIPEncoder.v1``, ``spacy_m3el.TowerEncoder.v1``).
    """
    from .ml.model import build_m3el_model

    # The encoders that take text features from a text tower have no tokenizer.
    if (text_tower is not None) == bool(getattr(encoder, "uses_tokenizer", True)):
        raise ValueError(
            "spacy_m3el.M3EL.v3: a text tower goes with an encoder of images only "
            "(spacy_m3el.CLIPVisionEncoder.v1 or spacy_m3el.TowerVisionEncoder.v1), and "
            "spacy_m3el.CLIPEncoder.v1 or spacy_m3el.TowerEncoder.v1 go without one. Set "
            "both [components.m3el_linker.model.text_tower] and the encoder as in "
            "configs/demo-trf.cfg, or neither."
        )
    return build_m3el_model(
        encoder,
        alignment,
        hidden_width=hidden_width,
        image_width=image_width,
        units=(
            use_text_unit,
            use_image_unit,
            use_t2v_unit,
            use_v2t_unit,
            use_contrastive_loss,
            use_fusion_unit,
            use_late_interaction,
            use_i2t_unit,
        ),
        contrastive=(
            contrastive_temperature,
            contrastive_inter_weight,
            contrastive_intra_weight,
            contrastive_weight,
        ),
        csra_lambda=csra_lambda,
        missing_images=missing_images,
        text_tower=text_tower,
    )


@registry.architectures("spacy_m3el.TransformerTextTower.v1")
def build_transformer_text_tower_v1(
    tok2vec: Model, max_tokens: int = 96, entity_gradient: bool = True
) -> Model:
    """Token vectors of mentions and entity texts from the pipeline's shared transformer.

    tok2vec (Model): ``spacy-transformers.TransformerListener.v1`` (its ``upstream``,
        ``pooling`` and ``grad_factor`` apply).
    max_tokens (int): Token vectors kept per mention (its own, then its context) or entity.
    entity_gradient (bool): Train the transformer through the entity texts too (false:
        through the mentions only, a cheaper step).
    """
    from .ml.text_tower import TransformerTextTower

    return TransformerTextTower(tok2vec, max_tokens, entity_gradient)


@registry.misc("spacy_m3el.CLIPVisionEncoder.v1")
def build_clip_vision_encoder_v1(
    name: str, text_width: int = 384, vision_width: int = 768, projection_dim: int = 512
):
    """The vision tower of a CLIP checkpoint; the text features come from a text tower.

    text_width (int): The text tower's width (the shared transformer's hidden size).
    """
    from .ml.vision_encoder import CLIPVisionEncoder

    return CLIPVisionEncoder(
        name, text_width=text_width, vision_width=vision_width, projection_dim=projection_dim
    )
