"""The image store: pixels identical to decoding on the fly, rebuilt when they would differ."""

import json
import os
import time

import numpy
import pytest
from PIL import Image

from spacy_m3el.image_store import INDEX_FILE, ImageStore
from spacy_m3el.images import ImageLoadError, load_image
from spacy_m3el.ml.encoder import CLIPEncoder
from spacy_m3el.ml.pixels import PreparedPixels

from .util import TINY, color_image, png_bytes


@pytest.fixture(scope="module")
def encoder(tiny_clip):
    encoder = CLIPEncoder(tiny_clip, **TINY)
    encoder.load_pretrained()
    return encoder


@pytest.fixture
def images(tmp_path):
    """Three image files of different sizes and one file that is not an image."""
    folder = tmp_path / "images"
    folder.mkdir()
    paths = []
    for i, size in enumerate((40, 57, 90)):
        path = folder / f"{i}.png"
        Image.fromarray(color_image((40 * i, 200, 90), size=size, noise=30, seed=i)).save(path)
        paths.append(str(path))
    broken = folder / "broken.jpg"
    broken.write_bytes(b"not an image")
    return paths, str(broken)


def on_the_fly(encoder, values):
    return encoder.image_processor(images=[load_image(v) for v in values], return_tensors="np")[
        "pixel_values"
    ]


def test_store_gives_the_pixels_of_decoding_on_the_fly(encoder, images, tmp_path):
    paths, broken = images
    data = png_bytes(color_image((10, 20, 30), size=33, noise=10))
    store = ImageStore.build(tmp_path / "store", encoder.image_processor, paths + [data, broken])
    prepared = [store.get(value)[0] for value in paths + [data]]
    assert all(isinstance(p, PreparedPixels) and p.array.dtype == numpy.uint8 for p in prepared)
    expected = on_the_fly(encoder, paths + [data])
    numpy.testing.assert_array_equal(encoder.pixel_values(prepared), expected)
    # Mixed with decoded images, in order.
    mixed = [prepared[0], load_image(paths[1]), prepared[2]]
    numpy.testing.assert_array_equal(encoder.pixel_values(mixed), expected[:3])
    assert store.hits == 4 and len(store) == 5


def test_unreadable_images_keep_the_decoder_reason(encoder, images, tmp_path):
    paths, broken = images
    store = ImageStore.build(tmp_path / "store", encoder.image_processor, [broken])
    pixels, reason = store.get(broken)
    with pytest.raises(ImageLoadError) as err:
        load_image(broken)
    assert pixels is None and reason == str(err.value)


def test_unknown_values_and_arrays_are_misses(encoder, images, tmp_path):
    paths, _ = images
    store = ImageStore.build(tmp_path / "store", encoder.image_processor, paths[:1])
    assert store.get(paths[1]) is None
    assert store.get(color_image((1, 2, 3))) is None
    assert store.misses == 2


def test_an_up_to_date_store_is_reused_not_rewritten(encoder, images, tmp_path):
    paths, _ = images
    ImageStore.build(tmp_path / "store", encoder.image_processor, paths)
    before = os.stat(tmp_path / "store" / INDEX_FILE).st_mtime_ns
    again = ImageStore.build(tmp_path / "store", encoder.image_processor, reversed(paths))
    assert os.stat(tmp_path / "store" / INDEX_FILE).st_mtime_ns == before
    assert len(again) == 3


def test_a_changed_image_is_never_served_stale_and_is_prepared_again(encoder, images, tmp_path):
    paths, _ = images
    store = ImageStore.build(tmp_path / "store", encoder.image_processor, paths)
    time.sleep(0.01)
    Image.fromarray(color_image((250, 10, 10), size=64)).save(paths[1])
    assert store.get(paths[1]) is None and store.stale == 1  # the loader decodes it instead
    rebuilt = ImageStore.build(tmp_path / "store", encoder.image_processor, paths)
    numpy.testing.assert_array_equal(
        encoder.pixel_values([rebuilt.get(paths[1])[0]]), on_the_fly(encoder, paths[1:2])
    )
    numpy.testing.assert_array_equal(
        encoder.pixel_values([rebuilt.get(paths[0])[0]]), on_the_fly(encoder, paths[:1])
    )


def test_other_processor_settings_rebuild_the_store(encoder, images, tmp_path):
    paths, _ = images
    store = ImageStore.build(tmp_path / "store", encoder.image_processor, paths)
    processor = type(encoder.image_processor)(
        **{**encoder.image_processor.to_dict(), "size": {"shortest_edge": 16}},
    )
    processor.crop_size = {"height": 16, "width": 16}
    rebuilt = ImageStore.build(tmp_path / "store", processor, paths)
    assert rebuilt.fingerprint != store.fingerprint
    assert rebuilt.get(paths[0])[0].shape == (3, 16, 16)
    expected = processor(images=[load_image(paths[0])], return_tensors="np")["pixel_values"]
    from spacy_m3el.ml.pixels import finish_pixels

    numpy.testing.assert_array_equal(
        finish_pixels(processor, [rebuilt.get(paths[0])[0].array]), expected
    )


def test_a_damaged_store_is_built_again(encoder, images, tmp_path, caplog):
    paths, _ = images
    ImageStore.build(tmp_path / "store", encoder.image_processor, paths)
    index = tmp_path / "store" / INDEX_FILE
    index.write_text(json.dumps({"version": 1}), encoding="utf8")
    with pytest.raises(ValueError, match="Delete the folder"):
        ImageStore.open(tmp_path / "store")
    store = ImageStore.build(tmp_path / "store", encoder.image_processor, paths)
    assert len(store) == 3 and "building it again" in caplog.text


def test_worker_processes_build_the_same_store(encoder, images, tmp_path):
    paths, broken = images
    data = png_bytes(color_image((10, 20, 30), size=33, noise=10))
    values = paths + [broken, data]
    stores = []
    for workers in (1, 2):
        folder = tmp_path / f"store-{workers}"
        ImageStore.build(folder, encoder.image_processor, paths[:1])  # one row to reuse
        ImageStore.build(folder, encoder.image_processor, values, batch_size=2, workers=workers)
        stores.append(folder)
    for name in ("pixels.npy", INDEX_FILE):
        assert (stores[0] / name).read_bytes() == (stores[1] / name).read_bytes()
