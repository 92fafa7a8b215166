"""The README's Python example runs as written and prints what it says."""

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).parent.parent / "README.md"


def test_readme_example_runs(tmp_path, monkeypatch, no_network):
    code = re.search(r"```python\n(.*?)```", README.read_text(encoding="utf8"), re.S).group(1)
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(README), "exec"), {"__name__": "readme"})
    lines = out.getvalue().splitlines()
    assert lines[0] == "Q41421"
    assert lines[1].startswith("[('Q41421', 0.9")
    assert lines[2] == "ok"
    import spacy

    nlp = spacy.load(tmp_path / "jordan-linker")
    assert (
        nlp.get_pipe("m3el_linker").kb.get_record("Q810").description == "a country in western Asia"
    )
