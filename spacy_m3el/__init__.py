"""spacy_m3el: multimodal entity linking (M3EL) as a trainable spaCy component."""

from . import registrations  # noqa: F401  (registers the factory and functions)
from .about import __version__
from .images import get_image, install_image_extension, load_image, set_image
from .kb import EntityRecord, MultimodalKB
from .pipeline.linker import M3ELLinker
from .readers import MultimodalCorpus

install_image_extension()

__all__ = [
    "__version__",
    "EntityRecord",
    "M3ELLinker",
    "MultimodalCorpus",
    "MultimodalKB",
    "get_image",
    "install_image_extension",
    "load_image",
    "set_image",
]
