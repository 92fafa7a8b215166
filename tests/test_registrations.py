"""Registrations: setup.py entry points, registry names, light imports, loading by entry point."""

import json
import os
import runpy
import subprocess
import sys
from importlib import import_module
from importlib.metadata import distribution
from pathlib import Path
from typing import Dict

import pytest
import setuptools
import spacy
from spacy.language import Language
from spacy.util import registry
from thinc.api import Config

import spacy_m3el
from spacy_m3el.kb import (
    empty_kb,
    fuzzy_alias_candidates_batch,
    get_alias_candidates,
    get_alias_candidates_batch,
)
from spacy_m3el.pipeline.linker import M3ELLinker
from spacy_m3el.readers import MultimodalCorpus
from spacy_m3el.scoring import score_linker

from .util import linker_config

ROOT = Path(__file__).resolve().parent.parent
# Entry point group -> the spaCy registry that looks names up in it.
GROUPS = {
    "spacy_factories": "factories",
    "spacy_architectures": "architectures",
    "spacy_misc": "misc",
    "spacy_readers": "readers",
    "spacy_scorers": "scorers",
}
EXPECTED_NAMES = {
    "spacy_factories": {"m3el_linker"},
    "spacy_architectures": {
        "spacy_m3el.M3EL.v1",
        "spacy_m3el.M3EL.v2",
        "spacy_m3el.M3EL.v3",
        "spacy_m3el.TransformerTextTower.v1",
        "spacy_m3el.CLIPEncoder.v1",
        "spacy_m3el.AttentionAlignment.v1",
    },
    "spacy_misc": {
        "spacy_m3el.CLIPEncoder.v1",
        "spacy_m3el.CLIPVisionEncoder.v1",
        "spacy_m3el.TowerEncoder.v1",
        "spacy_m3el.TowerVisionEncoder.v1",
        "spacy_m3el.EfficientNetLite.v1",
        "spacy_m3el.HFVisionTower.v1",
        "spacy_m3el.HFTextTower.v1",
        "spacy_m3el.AttentionAlignment.v1",
        "spacy_m3el.OTAlignment.v1",
        "spacy_m3el.ImageJitter.v1",
        "spacy_m3el.EmptyKB.v1",
        "spacy_m3el.KBFromFile.v1",
        "spacy_m3el.AliasCandidates.v1",
        "spacy_m3el.AliasCandidatesBatch.v1",
        "spacy_m3el.AliasCandidatesBatch.v2",
    },
    "spacy_readers": {"spacy_m3el.MultimodalCorpus.v1"},
    "spacy_scorers": {"spacy_m3el.linker_scorer.v1", "spacy_m3el.full_kb_scorer.v1"},
}


def declared_entry_points() -> Dict[str, Dict[str, str]]:
    """``{group: {name: "module:attribute"}}`` as declared in setup.py (setup() is not run)."""
    captured = {}

    def fake_setup(**kwargs):
        captured.update(kwargs)

    original = setuptools.setup
    setuptools.setup = fake_setup
    try:
        runpy.run_path(str(ROOT / "setup.py"), run_name="not_main")
    finally:
        setuptools.setup = original
    result: Dict[str, Dict[str, str]] = {}
    for group, lines in captured["entry_points"].items():
        for line in lines:
            name, _, value = (part.strip() for part in line.partition("="))
            result.setdefault(group, {})[name] = value
    return result


DECLARED = declared_entry_points()


def installed_entry_points() -> Dict[str, Dict[str, str]]:
    result: Dict[str, Dict[str, str]] = {}
    for ep in distribution("spacy-m3el").entry_points:
        result.setdefault(ep.group, {})[ep.name] = ep.value
    return result


def fresh_python(code: str, cwd: Path, timeout: float = 120) -> str:
    """Run ``code`` in a fresh interpreter, offline, outside the repo; return its stdout."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PYTHONPATH", "PYTHONSTARTUP")
    }
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONDONTWRITEBYTECODE": "1"})
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


# Declarations ----------------------------------------------------------------------


def test_setup_py_declares_the_expected_entry_points():
    assert set(DECLARED) == set(GROUPS)
    assert {group: set(names) for group, names in DECLARED.items()} == EXPECTED_NAMES
    for names in DECLARED.values():
        for value in names.values():
            assert value.startswith("spacy_m3el.registrations:"), value


def test_installed_package_declares_the_same_entry_points():
    """Fails when setup.py changed without reinstalling (pip install -e .)."""
    installed = installed_entry_points()
    assert {group: installed.get(group, {}) for group in GROUPS} == DECLARED
    assert set(installed) == set(GROUPS)


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_entry_points_point_to_existing_attributes(group):
    eps = [ep for ep in distribution("spacy-m3el").entry_points if ep.group == group]
    assert {ep.name for ep in eps} == EXPECTED_NAMES[group]
    for ep in eps:
        module_name, _, attribute = ep.value.partition(":")
        module = import_module(module_name)
        assert hasattr(module, attribute), ep.value
        assert callable(getattr(module, attribute))
        assert ep.load() is getattr(module, attribute)


# Registry names ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "group,name",
    sorted((group, name) for group, names in EXPECTED_NAMES.items() for name in names),
)
def test_names_resolve_through_spacys_registries(group, name):
    module_name, _, attribute = DECLARED[group][name].partition(":")
    implementation = getattr(import_module(module_name), attribute)
    assert getattr(registry, GROUPS[group]).get(name) is implementation
    assert registry.get(GROUPS[group], name) is implementation
    assert registry.has(GROUPS[group], name)


def test_registered_functions_return_the_implementations(tmp_path):
    assert registry.misc.get("spacy_m3el.EmptyKB.v1")() is empty_kb
    assert registry.misc.get("spacy_m3el.AliasCandidates.v1")() is get_alias_candidates
    assert registry.misc.get("spacy_m3el.AliasCandidatesBatch.v1")() is get_alias_candidates_batch
    assert registry.misc.get("spacy_m3el.AliasCandidatesBatch.v2")() is fuzzy_alias_candidates_batch
    assert callable(registry.misc.get("spacy_m3el.KBFromFile.v1")(tmp_path / "kb"))
    assert registry.scorers.get("spacy_m3el.linker_scorer.v1")() is score_linker
    assert isinstance(
        registry.readers.get("spacy_m3el.MultimodalCorpus.v1")(tmp_path / "train.spacy"),
        MultimodalCorpus,
    )
    make_alignment = registry.misc.get("spacy_m3el.AttentionAlignment.v1")(scale=True)
    assert callable(make_alignment)


def test_m3el_architecture_returns_a_thinc_model(tiny_clip):
    from thinc.api import Model

    from spacy_m3el.ml.model import M3ELModel

    encoder = registry.misc.get("spacy_m3el.CLIPEncoder.v1")(
        name=tiny_clip, text_width=32, vision_width=32, projection_dim=16
    )
    alignment = registry.misc.get("spacy_m3el.AttentionAlignment.v1")()
    model = registry.architectures.get("spacy_m3el.M3EL.v1")(encoder, alignment)
    assert isinstance(model, Model) and isinstance(model, M3ELModel)
    assert model.net.encoder is encoder


@pytest.mark.parametrize(
    "name,args",
    [("spacy_m3el.CLIPEncoder.v1", {"name": "x"}), ("spacy_m3el.AttentionAlignment.v1", {})],
)
def test_old_architectures_names_still_build_with_a_warning(name, args):
    """Configs from before 0.2 name the encoder and alignment under @architectures."""
    with pytest.warns(FutureWarning, match="@misc"):
        old = registry.architectures.get(name)(**args)
    new = registry.misc.get(name)(**args)
    assert type(old) is type(new)


def test_a_config_with_the_old_names_builds_the_same_linker(tiny_clip):
    nlp = spacy.blank("en")
    nlp.add_pipe("m3el_linker", config=linker_config(tiny_clip))
    text = nlp.config.to_str()
    for name in ("CLIPEncoder", "AttentionAlignment"):
        new = f'@misc = "spacy_m3el.{name}.v1"'
        assert new in text
        text = text.replace(new, f'@architectures = "spacy_m3el.{name}.v1"')
    with pytest.warns(FutureWarning, match="replace @architectures"):
        old = spacy.util.load_model_from_config(Config().from_str(text), auto_fill=True)
    assert isinstance(old.get_pipe("m3el_linker"), M3ELLinker)
    encoder = old.config["components"]["m3el_linker"]["model"]["encoder"]
    assert encoder["@architectures"] == "spacy_m3el.CLIPEncoder.v1"


def test_names_resolve_in_a_config(tmp_path):
    config = Config().from_str(
        f"""
        [kb]
        @misc = "spacy_m3el.KBFromFile.v1"
        kb_path = "{tmp_path / "kb"}"

        [candidates]
        @misc = "spacy_m3el.AliasCandidatesBatch.v1"

        [empty]
        @misc = "spacy_m3el.EmptyKB.v1"

        [scorer]
        @scorers = "spacy_m3el.linker_scorer.v1"

        [corpus]
        @readers = "spacy_m3el.MultimodalCorpus.v1"
        path = "{tmp_path / "train.spacy"}"
        limit = 3
        """
    )
    resolved = registry.resolve(config)
    assert resolved["candidates"] is get_alias_candidates_batch
    assert resolved["empty"] is empty_kb
    assert resolved["scorer"] is score_linker
    assert isinstance(resolved["corpus"], MultimodalCorpus)
    with pytest.raises(ValueError, match="not found"):
        resolved["kb"](spacy.blank("en").vocab)  # the loader reads the KB only when called


def test_the_class_and_the_factory_give_the_same_linker():
    """Every setting the class has a default for gets the same one from the factory (a
    user who builds M3ELLinker directly gets the linker the config gives)."""
    import inspect

    config = Language.get_factory_meta("m3el_linker").default_config
    resolved = registry.resolve(
        {key: value for key, value in config.items() if key != "model"}, validate=False
    )
    defaults = {
        name: parameter.default
        for name, parameter in inspect.signature(M3ELLinker.__init__).parameters.items()
        if parameter.default is not inspect.Parameter.empty and name != "name"
    }
    assert set(defaults) <= set(resolved)
    differ = {
        key: (value, resolved[key])
        for key, value in defaults.items()
        if resolved[key] != (list(value) if isinstance(value, tuple) else value)
    }
    assert not differ, f"class and factory defaults differ: {differ}"


def test_m3el_linker_is_a_known_factory(tiny_clip):
    assert Language.has_factory("m3el_linker")
    assert "m3el_linker" in spacy.blank("en").factory_names
    meta = Language.get_factory_meta("m3el_linker")
    assert "token.ent_kb_id" in meta.assigns
    assert meta.default_score_weights["nel_micro_f"] == 1.0
    nlp = spacy.blank("en")
    linker = nlp.add_pipe("m3el_linker", config=linker_config(tiny_clip))
    assert isinstance(linker, M3ELLinker)
    assert nlp.pipe_names == ["m3el_linker"]
    component_config = nlp.config["components"]["m3el_linker"]
    assert component_config["factory"] == "m3el_linker"
    assert component_config["model"]["@architectures"] == "spacy_m3el.M3EL.v2"
    assert component_config["model"]["encoder"]["@misc"] == "spacy_m3el.CLIPEncoder.v1"
    assert component_config["model"]["encoder"]["name"] == tiny_clip
    assert component_config["model"]["alignment"]["@misc"] == "spacy_m3el.AttentionAlignment.v1"
    assert component_config["scorer"]["@scorers"] == "spacy_m3el.linker_scorer.v1"
    assert component_config["get_candidates_batch"]["@misc"] == "spacy_m3el.AliasCandidatesBatch.v2"
    assert component_config["generate_empty_kb"]["@misc"] == "spacy_m3el.EmptyKB.v1"
    # The config alone rebuilds the pipeline.
    rebuilt = spacy.util.load_model_from_config(nlp.config, auto_fill=True)
    assert isinstance(rebuilt.get_pipe("m3el_linker"), M3ELLinker)


# Fresh interpreters ------------------------------------------------------------------


def test_import_does_not_import_transformers(tmp_path):
    code = (
        "import json, sys\n"
        "import spacy_m3el\n"
        "print(json.dumps({'package': spacy_m3el.__file__, "
        "'heavy': sorted(m for m in ('transformers', 'spacy_transformers') "
        "if m in sys.modules)}))\n"
    )
    result = json.loads(fresh_python(code, tmp_path))
    assert Path(result["package"]).resolve() == Path(spacy_m3el.__file__).resolve()
    assert result["heavy"] == []


def test_registry_names_resolve_without_importing_the_package(tmp_path):
    """spaCy finds every name through the entry points, still without importing transformers.

    Function registries read their entry points on lookup; factories are read
    when a ``Language`` is created (spaCy's ``_entry_point_factories``).
    """
    names = {
        GROUPS[group]: sorted(names)
        for group, names in EXPECTED_NAMES.items()
        if group != "spacy_factories"
    }
    code = (
        "import json, sys\n"
        "import spacy\n"
        "from spacy.util import registry\n"
        "before = 'spacy_m3el' in sys.modules\n"
        f"names = {names!r}\n"
        "found = {reg: [getattr(registry, reg).get(name).__module__ for name in group] "
        "for reg, group in names.items()}\n"
        "heavy = 'transformers' in sys.modules\n"
        "nlp = spacy.blank('en')  # imports every factory entry point, spacy-transformers' too\n"
        "found['factories'] = [registry.factories.get('m3el_linker').__module__, "
        "'m3el_linker' in nlp.factory_names]\n"
        "print(json.dumps({'before': before, 'found': found, 'transformers': heavy}))\n"
    )
    result = json.loads(fresh_python(code, tmp_path))
    assert result["before"] is False
    # The thin registration modules: registrations, registrations_trf (the text tower's)
    # and the pretrained towers' registry (ml/towers/registry.py).
    thin = {
        "spacy_m3el.registrations",
        "spacy_m3el.registrations_trf",
        "spacy_m3el.ml.towers.registry",
    }
    found = result["found"]
    assert found.pop("factories") == ["spacy_m3el.registrations", True]
    assert {reg: len(group) for reg, group in found.items()} == {
        reg: len(group) for reg, group in names.items()
    }
    assert {module for group in found.values() for module in group} <= thin
    assert result["transformers"] is False


def test_saved_pipeline_loads_without_importing_the_package(build_nlp, tmp_path):
    nlp = build_nlp()
    nlp.to_disk(tmp_path / "pipeline")
    # What the pipeline predicts in this process, for comparison.
    doc = nlp.make_doc("Jordan was in the news again this week.")
    doc.ents = [doc.char_span(0, 6, label="ENT")]
    doc._.image = None
    expected = nlp(doc).ents[0]
    code = f"""
import json, socket, sys

def refuse(*args, **kwargs):
    raise RuntimeError("network access attempted")

socket.socket.connect = refuse
socket.create_connection = refuse

import spacy

before = "spacy_m3el" in sys.modules
nlp = spacy.load({str(tmp_path / "pipeline")!r})
doc = nlp.make_doc("Jordan was in the news again this week.")
doc.ents = [doc.char_span(0, 6, label="ENT")]
doc._.image = None
ent = nlp(doc).ents[0]
print(json.dumps({{
    "before": before,
    "pipe_names": nlp.pipe_names,
    "component": type(nlp.get_pipe("m3el_linker")).__module__,
    "kb_id": ent.kb_id_,
    "candidates": [kb_id for kb_id, _ in ent._.m3el_candidates],
    "image_status": doc._.m3el_image_status,
}}))
"""
    result = json.loads(fresh_python(code, tmp_path))
    assert result["before"] is False  # only the entry points brought the package in
    assert result["pipe_names"] == ["m3el_linker"]
    assert result["component"] == "spacy_m3el.pipeline.linker"
    assert result["kb_id"] in {"Q1", "Q2"}
    assert result["kb_id"] == expected.kb_id_
    assert result["candidates"] == [kb_id for kb_id, _ in expected._.m3el_candidates]
    assert {"Q1", "Q2"} <= set(result["candidates"])
    assert result["image_status"] == doc._.m3el_image_status


def test_missing_images_default_and_configs_without_it(tiny_clip):
    """New pipelines use the chosen policy; a config written before the option keeps
    the old behaviour ("mask"), so saved pipelines load and score as they did."""
    import spacy
    from thinc.api import Config

    from .util import linker_config

    nlp = spacy.blank("en")
    linker = nlp.add_pipe("m3el_linker", config=linker_config(tiny_clip))
    assert linker.net.missing_images.policy == "describe"
    config = Config().from_str(nlp.config.to_str())
    model = config["components"]["m3el_linker"]["model"]
    assert model["@architectures"] == "spacy_m3el.M3EL.v2"
    model["@architectures"] = "spacy_m3el.M3EL.v1"  # as saved before the option existed
    for key in ("missing_images", "use_fusion_unit", "use_late_interaction", "use_i2t_unit"):
        del model[key]  # none of these existed then
    old = spacy.util.load_model_from_config(config, auto_fill=True)
    assert old.get_pipe("m3el_linker").net.missing_images.policy == "mask"
