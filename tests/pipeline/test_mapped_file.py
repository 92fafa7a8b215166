import numpy
import pytest
from safetensors.numpy import load_file, save_file

from spacy_m3el.pipeline.entity_cache import EntityCache
from spacy_m3el.pipeline.mapped_file import map_safetensors, save_atomically

from .test_entity_cache import SPEC, random_side


def test_mapped_arrays_equal_safetensors_own_loader(tmp_path):
    rng = numpy.random.default_rng(0)
    tensors = {
        "f32": rng.normal(size=(3, 4)).astype("float32"),
        "f16": rng.normal(size=(5,)).astype("float16"),
        "i8": rng.integers(-127, 127, (2, 3, 4)).astype("int8"),
        "u8": numpy.frombuffer(b"a\nbc", dtype="uint8").copy(),
        "i32": numpy.arange(7, dtype="int32"),
        "empty": numpy.zeros((0, 4), dtype="float32"),
    }
    save_file(tensors, str(tmp_path / "t.safetensors"), metadata={"k": "v"})
    metadata, mapped = map_safetensors(tmp_path / "t.safetensors")
    assert metadata == {"k": "v"}
    loaded = load_file(str(tmp_path / "t.safetensors"))
    for key, value in loaded.items():
        assert mapped[key].dtype == value.dtype and numpy.array_equal(mapped[key], value)
        assert not mapped[key].flags.writeable


def test_a_mapped_cache_survives_saving_over_its_file(tmp_path):
    path = tmp_path / "cache.safetensors"
    cache = EntityCache.from_side(list("abcdefg"), random_side(), "int8", "m", "k", SPEC)
    cache.to_disk(path)
    mapped = EntityCache.from_disk(path, SPEC)
    before = {k: v.copy() for k, v in mapped.stored.items()}
    other = EntityCache.from_side(list("abcdefg"), random_side(seed=1), "int8", "m2", "k", SPEC)
    other.to_disk(path)  # a new file renamed over the old: the mapping keeps the old pages
    for key, value in before.items():
        assert numpy.array_equal(mapped.stored[key], value)
    assert EntityCache.from_disk(path, SPEC).model_fingerprint == "m2"
    assert [p.name for p in tmp_path.iterdir()] == ["cache.safetensors"]


def test_copied_and_mapped_caches_rank_alike(tmp_path):
    path = tmp_path / "cache.safetensors"
    EntityCache.from_side(list("abcdefg"), random_side(), "float16", "m", "k", SPEC).to_disk(path)
    mapped = EntityCache.from_disk(path, SPEC)
    copied = EntityCache.from_disk(path, SPEC, mmap=False)
    assert all(v.flags.writeable for v in copied.stored.values())
    queries = numpy.random.default_rng(2).normal(size=(3, 12)).astype("float32")
    assert mapped.nearest(queries, 4) == copied.nearest(queries, 4)
    assert numpy.array_equal(mapped.side_rows([3, 1])["text.q"], copied.side_rows([3, 1])["text.q"])


@pytest.mark.parametrize(
    "content", [b"", b"\x00" * 7, b"\xff" * 8 + b"{}", b"\x02\x00" + b"\x00" * 6 + b"{}"]
)
def test_a_broken_cache_file_says_to_delete_it(tmp_path, content):
    path = tmp_path / "cache.safetensors"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="cannot be read .*Delete it"):
        EntityCache.from_disk(path, SPEC)


def test_save_atomically_leaves_no_partial_file_when_writing_fails(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")

    def fail(path):
        path.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        save_atomically(target, fail)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out.txt"]
