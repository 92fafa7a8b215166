"""Registered factories and functions (thin; the implementations live elsewhere).

This module is named by the ``spacy_factories`` entry point, which spaCy
imports whenever it builds any pipeline, so it must stay import-light: torch
and transformers are imported only inside the builders.
"""

import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Union

from spacy.language import Language
from spacy.util import registry
from spacy.vocab import Vocab
from thinc.api import Config, Model

from .kb import (
    MultimodalKB,
    empty_kb,
    fuzzy_alias_candidates_batch,
    get_alias_candidates,
    get_alias_candidates_batch,
    kb_from_file,
)
from .ml.towers.registry import (  # noqa: F401 (the entry points name them here)
    build_efficientnet_lite_v1,
    build_hf_text_tower_v1,
    build_hf_vision_tower_v1,
    build_tower_encoder_v1,
    build_tower_vision_encoder_v1,
)
from .pipeline.linker import M3ELLinker
from .readers import MultimodalCorpus
from .registrations_trf import (  # noqa: F401 (the entry points name them here)
    build_clip_vision_encoder_v1,
    build_m3el_v3,
    build_transformer_text_tower_v1,
)
from .scoring import score_linker

DEFAULT_MODEL_CONFIG = """
[model]
@architectures = "spacy_m3el.M3EL.v2"
hidden_width = 96
image_width = 96
use_text_unit = true
use_image_unit = true
use_t2v_unit = true
use_v2t_unit = true
use_contrastive_loss = true
contrastive_temperature = 0.03
contrastive_inter_weight = 1.0
contrastive_intra_weight = 0.8
contrastive_weight = 1.0
csra_lambda = 1.0
missing_images = "describe"

[model.encoder]
@misc = "spacy_m3el.CLIPEncoder.v1"
name = "openai/clip-vit-base-patch32"
text_width = 512
vision_width = 768
projection_dim = 512
max_length = 40

[model.alignment]
@misc = "spacy_m3el.AttentionAlignment.v1"
scale = true
"""
DEFAULT_MODEL = Config().from_str(DEFAULT_MODEL_CONFIG)["model"]


@Language.factory(
    "m3el_linker",
    requires=["doc.ents", "token.ent_iob", "token.ent_type"],
    assigns=["token.ent_kb_id", "span._.m3el_candidates", "doc._.m3el_image_status"],
    default_config={
        "model": DEFAULT_MODEL,
        "labels_discard": [],
        "overwrite": True,
        "use_gold_ents": True,
        "threshold": None,
        "top_k": 10,
        "max_candidates": 16,
        "n_hard_negatives": 3,
        "n_mined_negatives": 3,
        "image_swap_negatives": False,
        "n_kb_mentions": 0,
        "kb_mention_jitter": {"@misc": "spacy_m3el.ImageJitter.v1"},
        "mention_jitter": None,
        "logit_adjustment": 0.0,
        "mining_refresh": 100,
        "alias_evidence": True,
        "get_candidates_batch": {"@misc": "spacy_m3el.AliasCandidatesBatch.v2"},
        "generate_empty_kb": {"@misc": "spacy_m3el.EmptyKB.v1"},
        "image_attr": "image",
        "max_context_tokens": 64,
        "entity_batch_size": 64,
        "entity_cache_precision": "int8",
        "save_entity_cache": True,
        "image_cache_size": 512,
        "ignore_missing_gold": False,
        "scorer": {"@scorers": "spacy_m3el.linker_scorer.v1"},
    },
    default_score_weights={
        "nel_micro_f": 1.0,
        "nel_micro_p": None,
        "nel_micro_r": None,
        "nel_mrr": None,
        "nel_hits@1": None,
        "nel_hits@3": None,
        "nel_hits@5": None,
    },
)
def make_m3el_linker(
    nlp: Language,
    name: str,
    model: Model,
    *,
    labels_discard: Iterable[str],
    overwrite: bool,
    use_gold_ents: bool,
    threshold: Optional[float],
    top_k: int,
    max_candidates: Optional[int],
    n_hard_negatives: int,
    n_mined_negatives: int,
    image_swap_negatives: bool,
    n_kb_mentions: int,
    kb_mention_jitter: Optional[Callable],
    mention_jitter: Optional[Callable],
    logit_adjustment: float,
    mining_refresh: int,
    alias_evidence: bool,
    get_candidates_batch: Callable,
    generate_empty_kb: Callable[[Vocab, int], MultimodalKB],
    image_attr: str,
    max_context_tokens: int,
    entity_batch_size: int,
    entity_cache_precision: str,
    save_entity_cache: bool,
    image_cache_size: int,
    ignore_missing_gold: bool,
    scorer: Optional[Callable],
) -> M3ELLinker:
    """Create an ``m3el_linker`` (see :class:`M3ELLinker` for the settings)."""
    settings = {key: value for key, value in locals().items() if key not in ("nlp", "name")}
    if hasattr(model, "attach_pipeline"):  # a text tower reads this pipeline's transformer
        model.attach_pipeline(nlp)
    return M3ELLinker(nlp.vocab, name=name, **settings)


@registry.architectures("spacy_m3el.M3EL.v2")
def build_m3el_v2(
    encoder: Any,
    alignment: Callable[[int], Any],
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
    """The M3EL network (encoder + matching units) as a Thinc model (``M3ELModel``).

    encoder (CLIPEncoder): From ``spacy_m3el.CLIPEncoder.v1`` (``@misc``).
    alignment (Callable[[int], Module]): From ``spacy_m3el.AttentionAlignment.v1`` (``@misc``).
    hidden_width (int): Width of the matching units.
    image_width (int): Width the image features are projected to.
    use_*_unit (bool): Switch the text, image, textual-to-visual and
        visual-to-textual matching units on or off (ablations).
    use_contrastive_loss (bool): Add the intra-modal contrastive loss.
    contrastive_* (float): Its temperature, inter-/inner-source weights and weight.
    csra_lambda (float): Residual weight of the cross-modal pooling heads.
    missing_images (str): What a mention or entity without an image gets: "describe"
        (its own text embedding stands in for the image's), "mask", "black",
        "learned" or "calibrated" (see ``spacy_m3el.ml.missing_images``).
    use_fusion_unit (bool): Add OT-MEL's multimodal fusion unit (text and image of
        each item aligned onto each other, soft-pooled, scored by dot product).
    use_late_interaction (bool): Keep the token-level (global-to-local) terms of
        the text and image units; false leaves their global vectors only (with
        the other units off: the CLIP dual-encoder baseline).
    use_i2t_unit (bool): Add the image-to-text unit: the mention's image against the
        entity's text in CLIP's joint space.
    """
    settings = dict(locals())
    return build_m3el_v3(text_tower=None, **settings)


@registry.architectures("spacy_m3el.M3EL.v1")
def build_m3el_v1(
    encoder: Any,
    alignment: Callable[[int], Any],
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
) -> Model:
    """``spacy_m3el.M3EL.v2`` as it was before ``missing_images``: image-less items are
    masked (``"mask"``). Kept so pipelines saved with it load and score as before."""
    return build_m3el_v2(
        encoder,
        alignment,
        hidden_width,
        image_width,
        use_text_unit,
        use_image_unit,
        use_t2v_unit,
        use_v2t_unit,
        use_contrastive_loss,
        contrastive_temperature,
        contrastive_inter_weight,
        contrastive_intra_weight,
        contrastive_weight,
        csra_lambda,
        missing_images="mask",
    )


# The encoder and the alignment are PyTorch pieces that M3EL.v2 assembles, not
# Thinc models, so they live in @misc. Configs written before 0.2 name them under
# @architectures; those names still work there, with a deprecation warning.


@registry.misc("spacy_m3el.CLIPEncoder.v1")
def build_clip_encoder_v1(
    name: str,
    text_width: int = 512,
    vision_width: int = 768,
    projection_dim: int = 512,
    max_length: int = 40,
):
    """A Hugging Face CLIP checkpoint (hub name or local folder) as the encoder.

    The weights are loaded at ``nlp.initialize()``; the widths must match the
    checkpoint (checked then).
    """
    from .ml.encoder import CLIPEncoder

    return CLIPEncoder(
        name,
        text_width=text_width,
        vision_width=vision_width,
        projection_dim=projection_dim,
        max_length=max_length,
    )


@registry.misc("spacy_m3el.AttentionAlignment.v1")
def build_attention_alignment_v1(scale: bool = True) -> Callable[[int], Any]:
    """Token alignment by (scaled) dot-product attention with padding masks."""
    from .ml.layers import attention_alignment

    return attention_alignment(scale)


@registry.misc("spacy_m3el.OTAlignment.v1")
def build_ot_alignment_v1(
    epsilon: float = 0.05,
    iterations: int = 3,
    tolerance: Optional[float] = None,
    cost: str = "cosine",
    detach_plan: bool = False,
    distillation_weight: float = 0.0,
    distillation_temperature: float = 1.0,
    distillation_sample: int = 512,
    predict_with: str = "teacher",
) -> Callable[[int], Any]:
    """Token alignment by an entropic optimal-transport plan (OT-MEL), log-domain Sinkhorn.

    epsilon (float): Entropic regularisation.
    iterations (int): Sinkhorn iterations; tolerance (Optional[float]) stops earlier.
    cost (str): "cosine" (the reference's (1 - cos) / 2) or "dot".
    detach_plan (bool): No gradient through the plan.
    distillation_weight (float): Weight of the KL loss that trains a student
        attention on the plan (0: no student).
    distillation_temperature (float): Temperature of that loss.
    distillation_sample (int): Query-key set pairs per call the loss uses (0: all).
    predict_with (str): "teacher" (Sinkhorn) or "student" (attention, no Sinkhorn)
        outside training.
    """
    from .ml.transport import OTSettings, ot_alignment

    return ot_alignment(
        OTSettings(
            epsilon=epsilon,
            iterations=iterations,
            tolerance=tolerance,
            cost=cost,
            detach_plan=detach_plan,
            distillation_weight=distillation_weight,
            distillation_temperature=distillation_temperature,
            distillation_sample=distillation_sample,
            predict_with=predict_with,
        )
    )


@registry.architectures("spacy_m3el.CLIPEncoder.v1")
def deprecated_clip_encoder_v1(
    name: str,
    text_width: int = 512,
    vision_width: int = 768,
    projection_dim: int = 512,
    max_length: int = 40,
):
    """Deprecated: ``@architectures`` alias of the ``@misc`` function of this name."""
    warn_moved_to_misc("spacy_m3el.CLIPEncoder.v1", "model.encoder")
    return build_clip_encoder_v1(name, text_width, vision_width, projection_dim, max_length)


@registry.architectures("spacy_m3el.AttentionAlignment.v1")
def deprecated_attention_alignment_v1(scale: bool = True) -> Callable[[int], Any]:
    """Deprecated: ``@architectures`` alias of the ``@misc`` function of this name."""
    warn_moved_to_misc("spacy_m3el.AttentionAlignment.v1", "model.alignment")
    return build_attention_alignment_v1(scale)


def warn_moved_to_misc(function: str, section: str) -> None:
    warnings.warn(
        f"{function} is registered under @misc since spacy-m3el 0.2 (it builds a PyTorch "
        f"piece, not a Thinc model). In [components.<linker>.{section}] of the config, "
        f'replace @architectures = "{function}" with @misc = "{function}".',
        FutureWarning,
        stacklevel=2,
    )


@registry.misc("spacy_m3el.ImageJitter.v1")
def build_image_jitter_v1(
    scale_range: Iterable[float] = (0.8, 1.2), max_shift: float = 0.1, noise: float = 0.04
) -> Callable:
    """Random zoom (factor in ``scale_range``), shift (up to ``max_shift`` of the side) and
    Gaussian noise (``noise`` of the intensity range) for training images."""
    from .ml.augment import ImageJitter

    return ImageJitter(tuple(scale_range), float(max_shift), float(noise))


@registry.misc("spacy_m3el.EmptyKB.v1")
def create_empty_kb_v1() -> Callable[[Vocab, int], MultimodalKB]:
    return empty_kb


@registry.misc("spacy_m3el.KBFromFile.v1")
def create_kb_from_file_v1(kb_path: Optional[Union[str, Path]]) -> Callable[[Vocab], MultimodalKB]:
    return kb_from_file(kb_path)


@registry.misc("spacy_m3el.AliasCandidates.v1")
def create_alias_candidates_v1() -> Callable:
    return get_alias_candidates


@registry.batchers("spacy_m3el.PrefetchBatcher.v1")
def create_prefetch_batcher(batcher: Callable, ahead: int = 2) -> Callable:
    """``batcher``, run ``ahead`` batches in advance on a worker thread that also lets the
    linker prepare them (gold spans, images); the results stay identical."""
    from .pipeline.prefetch import prefetch_batcher

    return prefetch_batcher(batcher, ahead)


@registry.misc("spacy_m3el.AliasCandidatesBatch.v1")
def create_alias_candidates_batch_v1() -> Callable:
    return get_alias_candidates_batch


@registry.misc("spacy_m3el.AliasCandidatesBatch.v2")
def create_alias_candidates_batch_v2() -> Callable:
    """Exact, then normalized, then within-one-edit (misspelt names) alias candidates."""
    return fuzzy_alias_candidates_batch


@registry.readers("spacy_m3el.MultimodalCorpus.v1")
def create_multimodal_corpus_v1(
    path: Optional[Path],
    image_attr: str = "image",
    limit: int = 0,
    gold_preproc: bool = False,
    max_length: int = 0,
    augmenter: Optional[Callable] = None,
    shuffle: bool = False,
    fraction: float = 1.0,
    subset_seed: int = 0,
) -> MultimodalCorpus:
    """spacy.Corpus with images; ``fraction`` keeps a fixed subset (low-resource training)."""
    return MultimodalCorpus(
        path,
        image_attr=image_attr,
        limit=limit,
        gold_preproc=gold_preproc,
        max_length=max_length,
        augmenter=augmenter,
        shuffle=shuffle,
        fraction=fraction,
        subset_seed=subset_seed,
    )


@registry.scorers("spacy_m3el.linker_scorer.v1")
def create_linker_scorer_v1() -> Callable:
    """Candidate mode (cheap): spaCy's NEL P/R/F and MRR/Hits@k over the linker's candidates."""
    return score_linker


@registry.scorers("spacy_m3el.full_kb_scorer.v1")
def create_full_kb_scorer_v1(
    batch_size: int = 16, entity_chunk_size: int = 2048, candidates: bool = True
) -> Callable:
    """The papers' model selection: each dev mention ranked among all KB entities
    (``nel_kb_mrr``, ``nel_kb_hits@k``), plus the candidate-mode keys if ``candidates``."""
    from .evaluation import full_kb_scorer

    return full_kb_scorer(batch_size, entity_chunk_size, candidates)
