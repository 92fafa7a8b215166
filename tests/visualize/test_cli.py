"""``python -m spacy_m3el visualize`` on a gold file and on raw text with an NER step."""

from spacy.tokens import DocBin

from spacy_m3el.cli import main

from ..util import ENTITIES, make_examples, trained_pipeline


def test_report_from_a_gold_file_and_plain_view_from_ner(tiny_clip, tmp_path):
    nlp = trained_pipeline(tiny_clip, steps=3)
    nlp.to_disk(tmp_path / "pipeline")
    references = [eg.reference for eg in make_examples(nlp, per_entity=1)]
    DocBin(docs=references, store_user_data=True).to_disk(tmp_path / "gold.spacy")
    out = tmp_path / "reports" / "gold.html"
    args = ["visualize", str(tmp_path / "pipeline"), str(tmp_path / "gold.spacy")]
    assert main([*args, "--output", str(out), "--top-k", "3"]) == 0
    html = out.read_text(encoding="utf8")
    assert "Worst errors first" in html and "Rank of the gold entity" in html
    assert html.count("<section class='doc") == len(references)

    # A pipeline that finds the spans itself (an entity ruler before the linker), on text
    # without gold links: the plain view.
    ruler = nlp.add_pipe("entity_ruler", before="m3el_linker")
    ruler.add_patterns([{"label": "ENT", "pattern": name} for _, name, _, _ in ENTITIES])
    nlp.to_disk(tmp_path / "ner-pipeline")
    raw = []
    for doc in references:
        plain = nlp.make_doc(doc.text)
        plain._.image = doc._.image
        raw.append(plain)
    DocBin(docs=raw, store_user_data=True).to_disk(tmp_path / "raw.spacy")
    out = tmp_path / "reports" / "raw.html"
    args = ["visualize", str(tmp_path / "ner-pipeline"), str(tmp_path / "raw.spacy")]
    assert main([*args, "--output", str(out), "--limit", "4"]) == 0
    html = out.read_text(encoding="utf8")
    assert "Worst errors" not in html and html.count("<section class='doc") == 4
    assert html.count("<mark class='ent'") == 4  # spans found by the ruler, linked
    assert "Q" in html.split("class='kbid'>", 1)[1][:3]


def test_missing_inputs_are_clear_errors(tmp_path, capsys):
    assert (
        main(["visualize", str(tmp_path / "none"), str(tmp_path / "x.spacy"), "--output", "o.html"])
        == 1
    )
    assert "Pipeline folder not found" in capsys.readouterr().err
