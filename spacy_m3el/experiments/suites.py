"""The experiments' variants: ablations, low-resource training, image-less policies, systems.

A :class:`Variant` is a named set of config overrides; a suite is a list of
them. Every variant is trained and evaluated with the same config, data and
seeds, so a table row differs from the full model only by its overrides.
"""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

MODEL = "components.m3el_linker.model"
UNITS = ("use_text_unit", "use_image_unit", "use_t2v_unit", "use_v2t_unit")
FULL = "M3EL (full)"


@dataclass(frozen=True)
class Variant:
    """One row of an experiment table.

    name (str): The row label, e.g. "w/o contrastive".
    overrides (Dict[str, Any]): Config overrides (dotted keys) over the base config.
    suite (str): The suite it belongs to.
    train_fraction (Optional[float]): The share of training documents (low-resource rows).
    """

    name: str
    overrides: Dict[str, Any] = field(default_factory=dict)
    suite: str = "ablations"
    train_fraction: Optional[float] = None


def _only(unit: str) -> Dict[str, Any]:
    return {f"{MODEL}.{u}": u == unit for u in UNITS}


def ablations(alignments: Sequence[str] = ()) -> List[Variant]:
    """The papers' ablations: each loss and unit removed, each cross-modal direction alone.

    alignments (Sequence[str]): Registered ``@misc`` alignments (with their defaults)
        to add as rows, e.g. ``"spacy_m3el.OTAlignment.v1"``, in every unit's slot.
    """
    rows = [
        Variant(FULL),
        Variant("w/o contrastive", {f"{MODEL}.use_contrastive_loss": False}),
        Variant("w/o text unit", {f"{MODEL}.use_text_unit": False}),
        Variant("w/o image unit", {f"{MODEL}.use_image_unit": False}),
        Variant("w/o textual-to-visual", {f"{MODEL}.use_t2v_unit": False}),
        Variant("w/o visual-to-textual", {f"{MODEL}.use_v2t_unit": False}),
        Variant("textual-to-visual alone", _only("use_t2v_unit")),
        Variant("visual-to-textual alone", _only("use_v2t_unit")),
    ]
    for name in alignments:
        rows.append(Variant(f"alignment {name}", {f"{MODEL}.alignment": {"@misc": name}}))
    return rows


def low_resource(fractions: Sequence[float] = (0.1, 0.2, 0.5)) -> List[Variant]:
    """The full model trained on fixed subsets of the training documents, plus all of them."""
    rows = [
        Variant(
            f"{fraction:.0%} of training",
            {"corpora.train.fraction": fraction},
            suite="low-resource",
            train_fraction=fraction,
        )
        for fraction in sorted(fractions)
        if 0 < fraction < 1
    ]
    return rows + [Variant("100% of training", {}, suite="low-resource", train_fraction=1.0)]


def missing_images(policies: Optional[Sequence[str]] = None) -> List[Variant]:
    """One row per policy for mentions and entities without an image (default: all)."""
    if policies is None:
        from ..ml.missing_images import MISSING_IMAGE_POLICIES as policies
    return [
        Variant(policy, {f"{MODEL}.missing_images": policy}, suite="missing-images")
        for policy in policies
    ]


OT_ALIGNMENT = {"@misc": "spacy_m3el.OTAlignment.v1"}
OT_UNITS = {
    f"{MODEL}.use_t2v_unit": False,
    f"{MODEL}.use_v2t_unit": False,
    f"{MODEL}.use_fusion_unit": True,
}


def systems(distillation_weight: float = 0.5) -> List[Variant]:
    """The systems side by side on one config's data and budget (set in M3EL's config):
    the CLIP dual encoder, M3EL with attention, M3EL with OT alignment, OT-MEL's units
    (text, image, fusion) with attention, OT-MEL (OT matching and fusion) predicting
    with Sinkhorn, and OT-MEL distilled into attention.

    distillation_weight (float): Weight of the distillation loss of the distilled row.
    """
    student = dict(OT_ALIGNMENT, distillation_weight=distillation_weight, predict_with="student")
    dual = {f"{MODEL}.{unit}": False for unit in ("use_t2v_unit", "use_v2t_unit")}
    fused = {**OT_UNITS, f"{MODEL}.use_late_interaction": False}
    global_only = {f"{MODEL}.use_late_interaction": False}
    i2t = f"{MODEL}.use_i2t_unit"
    return [
        Variant("CLIP dual encoder", {**dual, **global_only}, "systems"),
        Variant(
            "dual encoder + visual-to-textual",
            {**global_only, f"{MODEL}.use_t2v_unit": False},
            "systems",
        ),
        Variant("dual encoder + image-to-text", {**dual, **global_only, i2t: True}, "systems"),
        Variant("M3EL (attention)", {}, "systems"),
        Variant("M3EL, OT alignment", {f"{MODEL}.alignment": OT_ALIGNMENT}, "systems"),
        Variant("OT-MEL units, attention", dict(OT_UNITS), "systems"),
        Variant("OT-MEL (Sinkhorn)", {**OT_UNITS, f"{MODEL}.alignment": OT_ALIGNMENT}, "systems"),
        Variant("OT-MEL distilled", {**OT_UNITS, f"{MODEL}.alignment": student}, "systems"),
        Variant(
            "dual encoder + OT fusion", {**fused, f"{MODEL}.alignment": OT_ALIGNMENT}, "systems"
        ),
        Variant(
            "dual encoder + OT fusion, distilled",
            {**fused, f"{MODEL}.alignment": student},
            "systems",
        ),
    ]


SUITES = {
    "ablations": ablations,
    "low-resource": low_resource,
    "missing-images": missing_images,
    "systems": systems,
}


def suite_variants(
    names: Sequence[str], fractions: Sequence[float] = (0.1, 0.2, 0.5)
) -> List[Variant]:
    """The variants of the named suites (``"all"``: ablations and low-resource), in order.

    fractions (Sequence[float]): The training shares of the low-resource suite.
    """
    chosen: List[Variant] = []
    for name in names:
        if name == "all":
            chosen += ablations() + low_resource(fractions)
        elif name == "low-resource":
            chosen += low_resource(fractions)
        elif name in SUITES:
            chosen += SUITES[name]()
        else:
            raise ValueError(
                f"Unknown experiment suite {name!r}; use one of {', '.join(SUITES)} or all."
            )
    return chosen
