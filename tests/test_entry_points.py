"""Registration: entry points, registry names, a light import, loading without importing us."""
import subprocess
import sys
from importlib.metadata import entry_points
from importlib import import_module

import pytest
import spacy
from spacy.util import registry

EXPECTED = {
    "spacy_factories": {"m3el_linker"},
    "spacy_architectures": {"spacy_m3el.M3EL.v1", "spacy_m3el.CLIPEncoder.v1", "spacy_m3el.AttentionAlignment.v1"},
    "spacy_misc": {"spacy_m3el.EmptyKB.v1", "spacy_m3el.KBFromFile.v1", "spacy_m3el.AliasCandidates.v1", "spacy_m3el.AliasCandidatesBatch.v1"},
    "spacy_readers": {"spacy_m3el.MultimodalCorpus.v1"},
    "spacy_scorers": {"spacy_m3el.linker_scorer.v1"},
}


@pytest.mark.parametrize("group", sorted(EXPECTED))
def test_entry_points_declared_and_importable(group):
    declared = {ep.name: ep for ep in entry_points(group=group) if ep.value.startswith("spacy_m3el")}
    assert set(declared) == EXPECTED[group]
    for ep in declared.values():
        module, _, attribute = ep.value.partition(":")
        assert callable(getattr(import_module(module), attribute))


def test_registry_names_resolve():
    for name in EXPECTED["spacy_architectures"]:
        assert callable(registry.architectures.get(name))
    for name in EXPECTED["spacy_misc"]:
        assert callable(registry.misc.get(name))
    assert callable(registry.readers.get("spacy_m3el.MultimodalCorpus.v1"))
    assert callable(registry.scorers.get("spacy_m3el.linker_scorer.v1"))
    assert "m3el_linker" in spacy.blank("en").factory_names


def test_import_is_light():
    code = "import sys, spacy_m3el; print('transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_saved_pipeline_loads_without_importing_the_package(build_nlp, tmp_path):
    build_nlp().to_disk(tmp_path / "pipeline")
    code = (
        "import spacy, sys\n"
        f"nlp = spacy.load({str(tmp_path / 'pipeline')!r})\n"
        "doc = nlp.make_doc('Jordan was in the news again this week.')\n"
        "doc.ents = [doc.char_span(0, 6, label='ENT')]\n"
        "doc._.image = None\n"
        "print(nlp(doc).ents[0].kb_id_)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"HF_HUB_OFFLINE": "1", "PATH": ""})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() in {"Q1", "Q2"}
