"""The documentation's runnable Python examples run as written and print what they say.

A ```python block is runnable when the line directly before its opening fence is
``<!-- runnable -->``. Every such block of README.md and docs/*.md runs offline, in a fresh
temporary directory, with network access refused; the README's first runnable block (the
Jordan example) is also checked against what it says it prints and saves.
"""

import contextlib
import io
import re
import traceback
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
README = ROOT / "README.md"
MARKER = "<!-- runnable -->"
RUNNABLE_BLOCK = re.compile(r"^<!-- runnable -->\n```python\n(.*?)^```[ \t]*$", re.S | re.M)


def documentation_files() -> list[Path]:
    return [README, *sorted((ROOT / "docs").glob("*.md"))]


def runnable_blocks(path: Path) -> list[tuple[int, str]]:
    """The runnable blocks of one file: (line of the block's first code line, code)."""
    text = path.read_text(encoding="utf8")
    return [
        (text.count("\n", 0, match.start(1)) + 1, match.group(1))
        for match in RUNNABLE_BLOCK.finditer(text)
    ]


BLOCKS = [
    pytest.param(path, index, line, code, id=f"{path.relative_to(ROOT)}[{index}]")
    for path in documentation_files()
    for index, (line, code) in enumerate(runnable_blocks(path))
]


def check_jordan_example(lines: list[str], workdir: Path) -> None:
    """The README's example prints the player's ID, its candidates and the image status,
    and saves a pipeline that loads with its KB."""
    assert lines[0] == "Q41421"
    assert lines[1].startswith("[('Q41421', 0.9")
    assert lines[2] == "ok"
    import spacy

    nlp = spacy.load(workdir / "jordan-linker")
    assert (
        nlp.get_pipe("m3el_linker").kb.get_record("Q810").description == "a country in western Asia"
    )


# Extra checks on what a block prints, by (file, index of the runnable block in that file).
OUTPUT_CHECKS = {("README.md", 0): check_jordan_example}


def test_every_marker_marks_a_python_block():
    """A marker before anything but a ```python fence would silently run nothing."""
    for path in documentation_files():
        text = path.read_text(encoding="utf8")
        markers = len(re.findall(rf"^{re.escape(MARKER)}[ \t]*$", text, re.M))
        blocks = len(RUNNABLE_BLOCK.findall(text))
        assert markers == blocks, (
            f"{path.relative_to(ROOT)}: {markers} {MARKER!r} markers but {blocks} of them are "
            "directly followed by a ```python block"
        )


def test_readme_example_is_marked_runnable():
    blocks = runnable_blocks(README)
    assert blocks, f"README.md has no {MARKER!r} Python block"
    assert "jordan-linker" in blocks[0][1], (
        "README.md's first runnable block is not the Jordan example"
    )


@pytest.mark.parametrize("path,index,line,code", BLOCKS)
def test_runnable_block(path, index, line, code, tmp_path, monkeypatch, no_network):
    name = f"{path.relative_to(ROOT)}, runnable block {index} (line {line})"
    monkeypatch.chdir(tmp_path)
    # Blank lines in front, so that a traceback's line numbers are the Markdown file's.
    source = "\n" * (line - 1) + code
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            exec(compile(source, str(path), "exec"), {"__name__": "docs_example"})
        except Exception as error:
            pytest.fail(
                f"{name} raised {type(error).__name__}: {error}\n{traceback.format_exc()}",
                pytrace=False,
            )
    check = OUTPUT_CHECKS.get((str(path.relative_to(ROOT)), index))
    if check is not None:
        check(out.getvalue().splitlines(), tmp_path)
