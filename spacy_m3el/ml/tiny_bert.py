"""Build a tiny, randomly initialised BERT checkpoint offline (for tests).

spacy-transformers loads it with ``from_pretrained(path)`` like any Hugging Face
folder: a WordPiece vocabulary (special tokens, the words of a small corpus,
and single characters so that any text tokenizes), a config and safetensors weights.
"""

import re
from pathlib import Path
from typing import Iterable, Union

from .tiny_clip import DEFAULT_CORPUS

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
CHARACTERS = "abcdefghijklmnopqrstuvwxyz0123456789.,:;!?'\"()-[]&/"


def build_tiny_bert(
    output: Union[str, Path],
    corpus: Iterable[str] = (DEFAULT_CORPUS,),
    *,
    width: int = 32,
    layers: int = 2,
    heads: int = 2,
    seed: int = 0,
) -> Path:
    """Write a tiny BERT (config, safetensors weights, vocab.txt) to ``output``.

    RETURNS (Path): The folder.
    """
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    words = sorted({w for text in corpus for w in re.findall(r"[a-z]+", text.lower())})
    pieces = list(CHARACTERS) + ["##" + c for c in CHARACTERS]
    vocab = list(dict.fromkeys(SPECIAL_TOKENS + words + pieces))
    (output / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf8")
    BertTokenizerFast(vocab_file=str(output / "vocab.txt"), do_lower_case=True).save_pretrained(
        output
    )
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=width,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=2 * width,
        max_position_embeddings=512,
    )
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(output, safe_serialization=True)
    return output
