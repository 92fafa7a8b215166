"""Building the :class:`MultimodalKB` from ``kb_entity.json`` and its aliases.

Entities are keyed by QID (from the record or through ``qid2id.json``), carry
their name, text and existing safe images; aliases come from entity names and
the training mentions only.
"""

from pathlib import Path
from typing import Any, Dict, Iterable, List, Sequence
from urllib.parse import unquote

from spacy.language import Language
from spacy.tokens import Doc

from ..kb import ImageRef, MultimodalKB
from .mimic_files import _as_int, _is_nil, detect_text_field
from .mimic_images import _image_value, _usable_file, safe_join
from .mimic_report import KBReport


def _image_list(record: Dict[str, Any]) -> List[str]:
    images = record.get("image_list") or []
    if isinstance(images, str):
        images = [images]
    return [name for name in images if isinstance(name, str) and name.strip()]


def entity_images(
    record: Dict[str, Any], folder: Path, embed_images: bool, counts: KBReport
) -> List[ImageRef]:
    """The existing, safe images of one entity record.

    record (Dict[str, Any]): The entity record.
    folder (Path): The ``kb_image`` folder.
    embed_images (bool): Return bytes instead of absolute paths.
    counts (KBReport): Updated in place.
    RETURNS (List[ImageRef]): The images, in ``image_list`` order.
    """
    images: List[ImageRef] = []
    for name in _image_list(record):
        path = safe_join(folder, name.strip())
        if path is None:
            counts.kb_unsafe_image_paths += 1
        elif not _usable_file(path):
            counts.kb_images_missing += 1
        else:
            images.append(_image_value(path, embed_images))
    return images


def build_kb(
    nlp: Language,
    records: Sequence[Dict[str, Any]],
    id2qid: Dict[int, str],
    image_folder: Path,
    counts: KBReport,
    *,
    embed_images: bool = False,
) -> MultimodalKB:
    """Build a :class:`MultimodalKB` from entity records, without aliases.

    nlp (Language): Supplies the vocab.
    records (Sequence[Dict[str, Any]]): Records of ``kb_entity.json``.
    id2qid (Dict[int, str]): The inverted ``qid2id.json``.
    image_folder (Path): The ``kb_image`` folder.
    counts (KBReport): Updated in place.
    embed_images (bool): Store image bytes instead of paths.
    RETURNS (MultimodalKB): The KB, entities in file order.
    """
    kb = MultimodalKB(nlp.vocab)
    counts.records = len(records)
    counts.text_field = detect_text_field(records)
    for record in records:
        qid = record.get("qid") if isinstance(record.get("qid"), str) else None
        qid = (qid or "").strip() or id2qid.get(_as_int(record.get("id")), "")
        if not qid or _is_nil(qid):
            counts.no_qid += 1
            continue
        if kb.has_record(qid):
            counts.duplicate_qids += 1
            continue
        images = entity_images(record, image_folder, embed_images, counts)
        counts.images += len(images)
        counts.entities_without_images += not images
        name = record.get("entity_name")
        description = record.get(counts.text_field)
        kb.add_multimodal_entity(
            qid,
            unquote(name) if isinstance(name, str) else qid,
            description if isinstance(description, str) else "",
            images,
        )
        counts.entities += 1
    return kb


def train_aliases(docs: Iterable[Doc]) -> Dict[str, List[str]]:
    """Mention surface forms per gold QID, to be added as aliases.

    Use the training docs only: dev/test surface forms would leak into evaluation.

    docs (Iterable[Doc]): Docs whose entities carry gold ``kb_id_``.
    RETURNS (Dict[str, List[str]]): QID -> sorted surface forms.
    """
    aliases: Dict[str, set] = {}
    for doc in docs:
        for ent in doc.ents:
            aliases.setdefault(ent.kb_id_, set()).add(ent.text)
    return {qid: sorted(forms) for qid, forms in aliases.items()}
