import pytest

from .corpus import caption_records, save_corpus_pipeline, write_jsonl


@pytest.fixture(scope="session")
def corpus_model(tiny_clip, tmp_path_factory):
    """A saved pipeline (entity ruler + trained linker) with its entity cache."""
    return save_corpus_pipeline(tiny_clip, tmp_path_factory.mktemp("corpus_model") / "model")


@pytest.fixture(scope="session")
def captions(tmp_path_factory):
    """captions.jsonl: 48 records, images beside it in images/."""
    folder = tmp_path_factory.mktemp("captions")
    return write_jsonl(folder / "captions.jsonl", caption_records(48, folder / "images"))
