"""Build a tiny, randomly initialised CLIP checkpoint offline.

Tests and the offline demo cannot download ``openai/clip-vit-base-patch32``.
This writes a Hugging Face CLIP folder (config, weights, tokenizer and image
processor files) that loads with ``from_pretrained(path)`` exactly like the
real checkpoint: a byte-level BPE vocabulary in CLIP's format, with merges
learned from a small corpus so that words stay whole.
"""

import json
from pathlib import Path
from typing import Iterable, List, Optional, Union

DEFAULT_CORPUS = (
    "a photo of the person team player river country city club band album film song "
    "river basin capital state president singer actor actress footballer basketball "
    "scored points goals last night game match season league championship won lost "
    "visited flows through north south east west mountain lake island painting museum "
    "building church bridge tower station airport university school company founded "
    "born died played released directed written published album record label"
)


def _bytes_to_unicode() -> dict:
    """CLIP's reversible byte -> printable unicode map (as in GPT-2)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def _learn_merges(corpus: Iterable[str], vocab_size: int) -> List[str]:
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers

    pattern = (
        r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|"
        r"[^\s\p{L}\p{N}]+"
    )
    tokenizer = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(pattern), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        show_progress=False,
        end_of_word_suffix="</w>",
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(list(corpus), trainer=trainer)
    model = json.loads(tokenizer.to_str())["model"]
    merges = model["merges"]
    return [m if isinstance(m, str) else " ".join(m) for m in merges]


def write_clip_vocab(path: Union[str, Path], corpus: Iterable[str], vocab_size: int = 1000) -> Path:
    """Write ``vocab.json`` and ``merges.txt`` in CLIP's format into ``path``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    symbols = list(_bytes_to_unicode().values())
    vocab_list = symbols + [s + "</w>" for s in symbols]
    merges = []
    seen = set(vocab_list)
    for merge in _learn_merges(corpus, vocab_size):
        token = merge.replace(" ", "")
        if token in seen:
            continue
        seen.add(token)
        merges.append(merge)
        vocab_list.append(token)
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: i for i, token in enumerate(vocab_list)}
    (path / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf8")
    (path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf8")
    return path


def build_tiny_clip(
    path: Union[str, Path],
    *,
    corpus: Optional[Iterable[str]] = None,
    hidden_size: int = 32,
    projection_dim: int = 32,
    num_layers: int = 2,
    num_heads: int = 2,
    image_size: int = 32,
    patch_size: int = 8,
    max_positions: int = 40,
    vocab_size: int = 1000,
    seed: int = 0,
) -> Path:
    """Write a tiny random CLIP model with tokenizer and image processor to ``path``.

    path (Union[str, Path]): Output folder.
    corpus (Optional[Iterable[str]]): Texts to learn BPE merges from.
    RETURNS (Path): The folder, loadable with ``CLIPModel.from_pretrained``.
    """
    import torch
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPProcessor,
        CLIPTextConfig,
        CLIPTokenizer,
        CLIPVisionConfig,
    )

    path = Path(path)
    texts = list(corpus) if corpus is not None else [DEFAULT_CORPUS]
    write_clip_vocab(path, texts, vocab_size=vocab_size)
    tokenizer = CLIPTokenizer(str(path / "vocab.json"), str(path / "merges.txt"))
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
    )
    processor = CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)
    text_config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        max_position_embeddings=max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    vision_config = CLIPVisionConfig(
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        image_size=image_size,
        patch_size=patch_size,
    )
    config = CLIPConfig(
        text_config=text_config.to_dict(),
        vision_config=vision_config.to_dict(),
        projection_dim=projection_dim,
    )
    torch.manual_seed(seed)
    model = CLIPModel(config)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path
