"""See the links: an HTML view of linked mentions, their images and candidates.

``render(docs, kb=...)`` is to the linker what ``displacy.render(doc, style="ent")``
is to NER; ``render_report`` adds the evaluation view when gold links are known;
``serve`` shows either in a browser. The page is one self-contained file.
"""

from .page import render, render_report, serve

__all__ = ["render", "render_report", "serve"]
