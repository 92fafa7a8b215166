"""The papers' experiments as runs of ``spacy train``: suites, runner and report."""
