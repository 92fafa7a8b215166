"""``python -m spacy_m3el``: see :mod:`spacy_m3el.cli`."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
