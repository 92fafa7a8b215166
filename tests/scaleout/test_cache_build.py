import numpy
import pytest
import spacy

from spacy_m3el.pipeline.entity_cache import concat_stored
from spacy_m3el.scaleout.cache_build import run_starts


@pytest.mark.parametrize(
    "entities,workers,batch,expected",
    [
        (100, 2, 8, list(range(0, 100, 16))),
        (6, 2, 2, [0, 2, 4]),
        (5, 8, 64, [0]),
        (0, 2, 8, []),
    ],
)
def test_runs_are_whole_batches(entities, workers, batch, expected):
    assert run_starts(entities, workers, batch) == expected


def test_runs_of_whole_batches_concatenate_to_the_single_build(corpus_model):
    """What the actors do, in this process: encoding runs and concatenating them gives
    the arrays of encoding every entity in one pass."""
    linker = spacy.load(corpus_model).get_pipe("m3el_linker")
    linker.entity_batch_size = 2
    records = list(linker.kb.records())
    whole, _ = linker.index.encode_records(linker.kb, records, "int8")
    starts = run_starts(len(records), 2, 2)
    parts = [
        linker.index.encode_records(linker.kb, records[a:b], "int8")[0]
        for a, b in zip(starts, starts[1:] + [len(records)])
    ]
    merged = concat_stored(parts)
    assert len(parts) == 3 and sorted(merged) == sorted(whole)
    for key, value in whole.items():
        assert numpy.array_equal(merged[key], value), key
