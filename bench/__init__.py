"""Benchmarks of spacy-m3el (speed, memory, retrieval quality at KB scale).

Run the scripts as modules from the repository root, for example
``python -m bench.scale``; see ``bench/README.md``. They use only the
package's public API (the ``m3el_linker`` component's stage methods and
the ``M3ELModel`` facade).
"""
