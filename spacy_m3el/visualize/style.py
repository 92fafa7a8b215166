"""The page's inline style, and displaCy-like colours per entity label."""

import hashlib

PALETTE = ("#aa9cfc", "#7aecec", "#bfeeb7", "#feca74", "#ff9561", "#ddd", "#f0d0ff", "#c887fb")

CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}h3{margin:0 0 .3em;font-size:1em}
section.doc{display:flex;gap:1em;border:1px solid #ddd;border-radius:6px;padding:.8em;margin:.8em 0}
section.doc.has-error{border-color:#d33;box-shadow:0 0 0 1px #d33}
.docimg{flex:0 0 100px}.docbody{flex:1}
.text{line-height:2.4}
mark.ent{padding:.25em .4em;border-radius:.35em;margin:0 .15em}
mark.ent.right{outline:2px solid #2a2}mark.ent.wrong{outline:2px solid #d33}
mark .label,mark .kbid{font-size:.7em;font-weight:bold;margin-left:.5em;text-transform:uppercase}
mark .kbid{text-transform:none;font-family:monospace}
img.thumb{max-width:96px;max-height:96px;border-radius:4px;display:block}
.noimg{font-size:.8em;color:#777;display:inline-block;max-width:96px}
table.cands{border-collapse:collapse;width:100%;margin:.3em 0 .8em}
table.cands td{border-top:1px solid #eee;padding:.25em .4em;vertical-align:top;font-size:.9em}
tr.cand.chosen{background:#f4f8ff}tr.cand.gold td:first-child{border-left:4px solid #2a2}
.desc{color:#555;font-size:.85em}.goldtag{color:#2a2;font-weight:bold;font-size:.8em}
td.score{width:140px}.bar,.hbar{height:.6em;background:#4c72b0;border-radius:2px;margin-bottom:2px}
.hbar{display:inline-block;margin-right:.5em;min-width:1px;vertical-align:middle}
table.metrics th,table.hist th{text-align:left;padding-right:1em;font-weight:normal;color:#555}
table.hist td{width:400px}.spanhead{font-size:.9em;color:#333}.note{color:#a60}
ol.errors li{margin:.2em 0}
"""


def label_colour(label: str) -> str:
    """A stable colour per entity label (displaCy's palette idea)."""
    digest = hashlib.sha1(label.encode("utf8")).digest()
    return PALETTE[digest[0] % len(PALETTE)]
