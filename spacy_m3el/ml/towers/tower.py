"""What every pretrained tower shares: a frozen part and a trained part.

A tower is a pretrained network (a vision backbone, a text encoder) split by
``trained_blocks``: -1 trains all of it; 0 freezes all of it; N > 0 freezes all but
its last N blocks. The frozen part's output is a fixed function of the input, so the
encoder keeps it in a :class:`~.store.FeatureStore` and training runs only the trained
part and the matching network. A tower is always in eval mode (batch norm statistics
and dropout as pretrained): fine-tuning a few blocks on small batches would otherwise
move the statistics the frozen part's outputs were normalised with.
"""

import hashlib
from typing import Dict, Iterable, Tuple

import torch
from torch import nn


def tower_device(module: nn.Module) -> torch.device:
    """Where a module's parameters are (the CPU for one without any)."""
    parameter = next(module.parameters(), None)
    return torch.device("cpu") if parameter is None else parameter.device


def check_trained_blocks(trained_blocks: int, n_blocks: int, what: str) -> int:
    """``trained_blocks`` if it is -1, 0 or at most the tower's ``n_blocks``; else a
    ValueError that says what to set."""
    if trained_blocks < -1 or trained_blocks > n_blocks:
        raise ValueError(
            f"{what}: trained_blocks must be -1 (train all), 0 (frozen) or 1..{n_blocks} "
            f"(train the last N of its {n_blocks} blocks), got {trained_blocks}."
        )
    return trained_blocks


def tower_config(config, tower: str):
    """The config of one tower of a two-tower checkpoint (CLIP, SigLIP: its ``vision`` or
    ``text`` config, with the joint ``projection_dim``); any other config as it is."""
    part = getattr(config, f"{tower}_config", None)
    if part is None:
        return config
    if hasattr(config, "projection_dim"):
        part.projection_dim = config.projection_dim
    return part


def load_hf_tower(name: str, tower: str, model_class_of, files: str, load_extra, **kwargs):
    """A Hugging Face tower's model (``model_class_of(config)``, the config of its
    ``tower`` part) and what ``load_extra(name)`` loads beside it (tokenizer, processor),
    or an OSError that says what the folder must hold (``files``)."""
    from transformers import AutoConfig

    try:
        config = tower_config(AutoConfig.from_pretrained(name, **kwargs), tower)
        model = model_class_of(config).from_pretrained(name, config=config, **kwargs)
        return model, load_extra(name)
    except OSError as err:
        raise OSError(
            f"Could not load the {tower} model {name!r}: {err}\nGive a local folder with "
            f"config.json, weights and {files}, or a hub name on a machine that can "
            "download it."
        ) from err


def hf_model_from_config(model_class, config, attn_implementation=None) -> nn.Module:
    """An unweighted Hugging Face model of a config (an ``Auto`` class or a model class),
    built with the attention kernel it was saved with (or scores differ in the last bits)."""
    if hasattr(model_class, "_from_config"):
        return model_class._from_config(config, attn_implementation=attn_implementation)
    return model_class.from_config(config, attn_implementation=attn_implementation)


class Tower(nn.Module):
    """Base of the towers: the split, the frozen parameters and their fingerprint.

    trained_blocks (int): -1 (all trained), 0 (frozen) or N (the last N blocks trained).
    """

    n_blocks: int = 0

    def __init__(self, trained_blocks: int):
        super().__init__()
        self.trained_blocks = trained_blocks
        self._weights_digest = None

    @property
    def stores_features(self) -> bool:
        """Whether part of the tower is frozen, so its outputs can be stored."""
        return self.trained_blocks != -1

    @property
    def split(self) -> int:
        """The index of the first trained block (``n_blocks`` when frozen)."""
        if self.trained_blocks == -1:
            return 0
        return self.n_blocks - self.trained_blocks

    def frozen_modules(self) -> Iterable[nn.Module]:
        """The modules of the frozen part (override per tower)."""
        return ()

    def freeze(self) -> None:
        """Stop gradients in the frozen part and switch to eval mode (called whenever
        weights are attached: a module built in training mode would update its batch norm
        statistics at its first forward pass)."""
        self.train(False)
        for parameter in self.parameters():
            parameter.requires_grad_(True)
        for module in self.frozen_modules():
            for parameter in module.parameters():
                parameter.requires_grad_(False)
        self._weights_digest = None

    def frozen_state_names(self, prefix: str) -> Tuple[str, ...]:
        """The state-dict names (under ``prefix``) of the frozen part's tensors."""
        ids = {
            id(t) for m in self.frozen_modules() for t in list(m.parameters()) + list(m.buffers())
        }
        return tuple(
            f"{prefix}{name}"
            for name, tensor in self.state_dict(keep_vars=True).items()
            if id(tensor) in ids
        )

    def weights_digest(self) -> str:
        """A SHA-256 of the frozen part's weights (computed once per attached weights)."""
        if self._weights_digest is None:
            digest = hashlib.sha256()
            for module in self.frozen_modules():
                for name, tensor in module.state_dict().items():
                    digest.update(name.encode("utf8"))
                    digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
            self._weights_digest = digest.hexdigest()
        return self._weights_digest

    def check_widths(self, found: Dict[str, int], tower: str) -> None:
        """Fail, unloaded, with the settings to fix when the loaded model's widths
        (``found``) are not the config's."""
        wrong = {k: v for k, v in found.items() if getattr(self, k) != v}
        if wrong:
            self.model = None
            fixes = ", ".join(f"{k} = {v}" for k, v in wrong.items())
            raise ValueError(
                f"The {tower} model {self.name!r} does not match the config: set {fixes} in "
                f"[components.m3el_linker.model.encoder.{tower}]."
            )

    def train(self, mode: bool = True) -> "Tower":
        # Always eval: see the module docstring.
        return super().train(False)
