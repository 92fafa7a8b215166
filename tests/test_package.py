"""`spacy package`: the trained transformer pipeline as a wheel that loads by name offline.

The wheel is installed into a fresh virtual environment with the constraints. To
stay offline and fast, that environment sees this environment's packages through a
``.pth`` file (torch and the rest are not downloaded again); spacy-m3el itself is
installed from a wheel built here, so the pipeline does not load the repo checkout.
"""

import json
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest
import srsly
from spacy.tokens import DocBin

from .util import raw_docs, trained_transformer_pipeline

ROOT = Path(__file__).parent.parent
LINK = """
import json, socket, sys
def refuse(*args, **kwargs):
    raise RuntimeError("network access attempted")
socket.socket.connect = refuse
socket.create_connection = refuse
import spacy, spacy_m3el
from spacy.tokens import DocBin
nlp = spacy.load("en_m3el_demo")
docs = list(nlp.pipe(DocBin().from_disk(sys.argv[1]).get_docs(nlp.vocab)))
links = [[[e.start_char, e.kb_id_, e._.m3el_candidates] for e in doc.ents] for doc in docs]
print(json.dumps({"package": spacy_m3el.__file__, "links": links}))
"""


def run(args, cwd=None, timeout=600) -> str:
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-3000:])
    return result.stdout


def fresh_venv(path: Path) -> Path:
    """A new virtual environment that also sees this one's site-packages."""
    run([sys.executable, "-m", "venv", str(path)])
    python = path / "bin" / "python"
    # The venv's own old setuptools would shadow the shared one that torch requires.
    run([str(python), "-m", "pip", "uninstall", "-q", "-y", "setuptools"])
    own = run([str(python), "-c", "import site; print(site.getsitepackages()[0])"]).strip()
    (Path(own) / "_shared_site_packages.pth").write_text(site.getsitepackages()[0] + "\n")
    return python


def source_tree(target: Path) -> Path:
    """A copy of what building spacy-m3el reads (so the build leaves the repo untouched)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(ROOT / "spacy_m3el", target / "spacy_m3el", ignore=ignore)
    for name in ("setup.py", "setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, target / name)
    return target


@pytest.fixture(scope="module")
def packaged(tmp_path_factory, tiny_clip, tiny_bert, one_torch_thread):
    """A trained transformer + ner + linker pipeline, its links, and its wheel."""
    root = tmp_path_factory.mktemp("package")
    nlp, examples = trained_transformer_pipeline(tiny_clip, tiny_bert, steps=10)
    nlp.to_disk(root / "model")
    raw = DocBin(store_user_data=True)
    for doc in raw_docs(nlp, examples):
        raw.add(doc)
    raw.to_disk(root / "raw.spacy")
    docs = nlp.pipe(raw.get_docs(nlp.vocab))
    links = [[[e.start_char, e.kb_id_, e._.m3el_candidates] for e in doc.ents] for doc in docs]
    spacy_cli = [sys.executable, "-m", "spacy", "package", str(root / "model"), str(root)]
    run(spacy_cli + ["--name", "m3el_demo", "--version", "0.1.0", "--build", "none"])
    package = root / "en_m3el_demo-0.1.0"
    wheel = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    run(wheel + ["-w", str(root / "dist"), str(package)])
    run(wheel + ["-w", str(root / "dist"), str(source_tree(root / "source"))])
    return root, package, json.loads(json.dumps(links))


def test_the_package_requires_spacy_m3el(packaged):
    _, package, _ = packaged
    requirements = srsly.read_json(package / "meta.json")["requirements"]
    assert any(r.startswith("spacy-m3el") for r in requirements)
    assert any(r.startswith("spacy-transformers") for r in requirements)


def test_the_wheel_installs_and_links_identically_offline(packaged, tmp_path):
    root, _, links = packaged
    python = fresh_venv(tmp_path / "venv")
    (own,) = sorted((root / "dist").glob("spacy_m3el-*.whl"))
    (pipeline,) = sorted((root / "dist").glob("en_m3el_demo-*.whl"))
    pip = [str(python), "-m", "pip", "install", "-q", "--no-index"]
    run(pip + ["--no-deps", "--force-reinstall", str(own)])
    run(pip + ["-c", str(ROOT / "constraints.txt"), str(pipeline)])
    (tmp_path / "link.py").write_text(LINK)
    out = json.loads(
        run([str(python), "link.py", str(root / "raw.spacy")], cwd=tmp_path).splitlines()[-1]
    )
    assert Path(out["package"]).is_relative_to(tmp_path / "venv")
    assert sum(len(doc) for doc in out["links"]) > 0
    assert out["links"] == links
