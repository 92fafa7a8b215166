"""A Hugging Face text encoder as the linker's own text tower.

The tower tokenizes a text, runs the encoder (all-MiniLM-L6-v2, BERT, RoBERTa, CLIP's
text model, ...) and gives its last hidden states as the local tokens and a pooled
vector as the global one. Unlike ``TransformerTextTower`` it reads no spaCy
``transformer`` component: it belongs to the linker alone (share one with an NER
through spacy-transformers' listener instead).
"""

import importlib
import tempfile
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple

import numpy
import torch
from torch import nn

from ..token_ids import TokenIds
from .tower import (
    Tower,
    check_trained_blocks,
    hf_model_from_config,
    load_hf_tower,
    tower_device,
)

POOLINGS = ("mean", "first", "pooler")


class HFTextTower(Tower):
    """A Hugging Face encoder and its tokenizer; weights at ``load_pretrained``.

    name (str): Hub name or local folder (the installed all-MiniLM-L6-v2 works offline).
    width (int): The encoder's hidden size.
    pooled_width (Optional[int]): Width of the pooled vector (default ``width``; CLIP's
        text model with ``pooling = "pooler"``: its projection_dim).
    pooling (str): "mean" (of the real tokens, as sentence-transformers pools), "first"
        (the first token: BERT's [CLS]) or "pooler" (the model's own pooled output,
        CLIP's projected text embedding; trained_blocks -1 or 0 only).
    trained_blocks (int): -1, 0 or the last N transformer layers trained.
    max_length (int): Tokens kept per text (longer texts are truncated).
    """

    def __init__(
        self,
        name: str,
        *,
        width: int,
        pooled_width: Optional[int] = None,
        pooling: str = "mean",
        trained_blocks: int = 0,
        max_length: int = 64,
    ):
        super().__init__(trained_blocks)
        if pooling not in POOLINGS:
            raise ValueError(f"HFTextTower pooling must be one of {POOLINGS}, got {pooling!r}.")
        if pooling == "pooler" and trained_blocks > 0:
            raise ValueError(
                "HFTextTower: pooling = 'pooler' needs the whole model's output; use "
                "trained_blocks = -1 or 0, or pooling = 'mean'."
            )
        if trained_blocks < -1:
            check_trained_blocks(trained_blocks, 0, f"HFTextTower {name!r}")
        self.name = name
        self.width = width
        self.pooled_width = width if pooled_width is None else pooled_width
        self.pooling = pooling
        self.max_length = max_length
        self.model: Optional[nn.Module] = None
        self.tokenizer = None
        self._token_ids = TokenIds()

    @property
    def is_loaded(self) -> bool:
        return self.model is not None

    @property
    def n_blocks(self) -> int:
        layers = self._layers()
        return 0 if layers is None else len(layers)

    def _layers(self) -> Optional[nn.ModuleList]:
        encoder = getattr(self.model, "encoder", None)
        return getattr(encoder, "layer", None)

    # Loading ------------------------------------------------------------------

    def load_pretrained(self, **kwargs) -> None:
        from transformers import AutoTokenizer

        model, tokenizer = load_hf_tower(
            self.name,
            "text",
            _text_model_class,
            "tokenizer files",
            lambda name: AutoTokenizer.from_pretrained(name, **kwargs),
            **kwargs,
        )
        self._attach(model, tokenizer)

    def _attach(self, model: nn.Module, tokenizer) -> None:
        self.model, self.tokenizer = model, tokenizer
        self._token_ids.clear()
        limit = getattr(model.config, "max_position_embeddings", None)
        if limit:
            self.max_length = min(self.max_length, limit)
        if self.trained_blocks > 0 and self._layers() is None:
            self.model = None
            raise ValueError(
                f"HFTextTower {self.name!r}: training the last blocks needs a BERT-like "
                "encoder (encoder.layer); use trained_blocks = -1 or 0 for this model."
            )
        check_trained_blocks(
            self.trained_blocks, max(self.n_blocks, 0), f"HFTextTower {self.name!r}"
        )
        ids, mask = self.tokenize(["a"])
        tokens, pooled = self._outputs(torch.from_numpy(ids), torch.from_numpy(mask))
        self.check_widths({"width": tokens.shape[-1], "pooled_width": pooled.shape[-1]}, "text")
        self.freeze()

    def meta(self) -> dict:
        if not self.is_loaded:
            return {"kind": "hf", "name": self.name, "hf_config": None}
        with tempfile.TemporaryDirectory() as tmp:
            self.tokenizer.save_pretrained(tmp)
            files = {p.name: p.read_bytes() for p in Path(tmp).iterdir() if p.is_file()}
        return {
            "kind": "hf",
            "name": self.name,
            "max_length": self.max_length,
            "hf_config": self.model.config.to_dict(),
            "attn_implementation": getattr(self.model.config, "_attn_implementation", None),
            "tokenizer_files": files,
        }

    def restore(self, meta: dict) -> None:
        from transformers import AutoConfig, AutoTokenizer

        if meta.get("hf_config") is None:
            self.model = None
            return
        config_dict = dict(meta["hf_config"])
        config = AutoConfig.for_model(config_dict.pop("model_type"), **config_dict)
        with tempfile.TemporaryDirectory() as tmp:
            for filename, data in meta["tokenizer_files"].items():
                (Path(tmp) / filename).write_bytes(data)
            tokenizer = AutoTokenizer.from_pretrained(tmp, local_files_only=True)
        model = hf_model_from_config(
            _text_model_class(config), config, meta.get("attn_implementation")
        )
        self.max_length = meta.get("max_length", self.max_length)
        self._attach(model, tokenizer)

    def fingerprint(self) -> str:
        """The frozen part's weights, the split, pooling and tokenization."""
        return (
            f"HFTextTower:{self.trained_blocks}:{self.pooling}:{self.max_length}:"
            f"{type(self.tokenizer).__name__}:{len(self.tokenizer)}:{self.weights_digest()}"
        )

    def frozen_modules(self) -> Iterable[nn.Module]:
        if self.model is None or self.split == 0:
            return ()
        if self.trained_blocks == 0:
            return (self.model,)
        return [self.model.embeddings] + list(self._layers()[: self.split])

    # Forward ------------------------------------------------------------------

    def tokenize(self, texts: Sequence[str]) -> Tuple[numpy.ndarray, numpy.ndarray]:
        """int64 token IDs and mask ``[n, L]``, padded, truncated to ``max_length``."""
        return self._token_ids(self.tokenizer, texts, self.max_length)

    def _outputs(self, ids: torch.Tensor, mask: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        out = self.model(input_ids=ids, attention_mask=mask)
        tokens = out.last_hidden_state
        if self.pooling == "pooler":
            pooled = getattr(out, "text_embeds", None)
            return tokens, out.pooler_output if pooled is None else pooled
        return tokens, self.pool(tokens, mask)

    def pool(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The pooled vector of token states (``"mean"`` or ``"first"``)."""
        if self.pooling == "first":
            return tokens[:, 0]
        weights = mask.to(tokens.dtype).unsqueeze(-1)
        return (tokens * weights).sum(1) / weights.sum(1).clamp(min=1.0)

    @property
    def stores_pooled(self) -> bool:
        """Whether the frozen part gives the pooled vector too (frozen, ``"pooler"``)."""
        return self.trained_blocks == 0 and self.pooling == "pooler"

    def frozen_forward(
        self, ids: torch.Tensor, mask: torch.Tensor
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """The frozen part's token states ``[n, L, W]``, and with :attr:`stores_pooled`
        the pooled vector (else None)."""
        if self.trained_blocks == 0:
            tokens, pooled = self._outputs(ids, mask)
            return tokens, pooled if self.stores_pooled else None
        hidden = self.model.embeddings(input_ids=ids)
        extended = self.model.get_extended_attention_mask(mask, ids.shape)
        for layer in self._layers()[: self.split]:
            hidden = layer(hidden, attention_mask=extended)[0]
        return hidden, None

    def frozen_rows(self, texts: Sequence[str]) -> List[numpy.ndarray]:
        """The frozen part's output per text as one flat row (the pooled vector with
        :attr:`stores_pooled`, then the real tokens' states), for the feature store."""
        ids, mask = self.tokenize(texts)
        device = tower_device(self)
        with torch.no_grad():
            states, pooled = self.frozen_forward(
                torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device)
            )
        states = states.float().cpu()
        pooled = None if pooled is None else pooled.float().cpu()
        rows = []
        for i, length in enumerate(mask.sum(1)):
            parts = [] if pooled is None else [pooled[i].numpy()]
            rows.append(numpy.concatenate(parts + [states[i, :length].numpy().reshape(-1)]))
        return rows

    def trained_forward(
        self, states: torch.Tensor, mask: torch.Tensor, pooled: Optional[torch.Tensor] = None
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Tokens and pooled vector from the frozen part's output."""
        if self.trained_blocks == 0:
            return states, self.pool(states, mask) if pooled is None else pooled
        extended = self.model.get_extended_attention_mask(mask, states.shape[:2])
        hidden = states
        for layer in self._layers()[self.split :]:
            hidden = layer(hidden, attention_mask=extended)[0]
        return hidden, self.pool(hidden, mask)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Tokens and pooled vector of token IDs, through both parts."""
        if self.trained_blocks == -1:
            return self._outputs(ids, mask)
        with torch.no_grad():
            states, pooled = self.frozen_forward(ids, mask)
        return self.trained_forward(states, mask, pooled)


def _text_model_class(config):
    """The text-only model class of a config (CLIP: its text tower with the projection)."""
    import transformers

    kind = getattr(config, "model_type", "")
    if kind in ("clip", "clip_text_model"):
        return transformers.CLIPTextModelWithProjection
    return importlib.import_module("transformers").AutoModel
