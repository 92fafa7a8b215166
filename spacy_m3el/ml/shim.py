"""The PyTorch shim's side of :class:`~.model.M3ELModel`: a call of one of the network's
entry points, how its numpy inputs become tensors on the shim's device (with gradients
for a text tower's token vectors) and its outputs numpy again, and deterministic kernels."""

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional

import numpy
from thinc.api import ArgsKwargs, Model

ROLES = ("mention", "entity")


@dataclass
class NetCall:
    """A call of one of the network's entry points through the PyTorch wrapper."""

    method: Callable[..., Any]
    inputs: Dict[str, Any] = field(default_factory=dict)


@contextmanager
def deterministic_torch():
    """Use torch's deterministic kernels inside the block, then restore the setting.

    Some CPU backward kernels (in CLIP's text tower) accumulate in an order
    that depends on thread scheduling; without this, two trainings with the
    same seed end with different weights.
    """
    import torch

    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


def to_torch(value: Any, device) -> Any:
    import torch

    if isinstance(value, dict):
        return {key: to_torch(item, device) for key, item in value.items()}
    if isinstance(value, numpy.ndarray):
        return torch.from_numpy(numpy.ascontiguousarray(value)).to(device)
    return value


def to_numpy(value: Any) -> Any:
    import torch

    if isinstance(value, dict):
        return {key: to_numpy(item) for key, item in value.items()}
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return value


def convert_inputs(model: Model, X: NetCall, is_train: bool):
    device = model.shims[0].device
    kwargs = to_torch(X.inputs, device)
    roles = [role for role in ROLES if "text_tokens" in kwargs.get(f"{role}_features", {})]
    if is_train:
        for role in roles:  # text features from a text tower get their gradient
            kwargs[f"{role}_features"]["text_tokens"].requires_grad_(True)

    def d_text_tokens(d_inputs: ArgsKwargs) -> Dict[str, Optional[numpy.ndarray]]:
        grads = {role: d_inputs.kwargs[f"{role}_features"]["text_tokens"] for role in roles}
        return {
            role: numpy.zeros(X.inputs[f"{role}_features"]["text_tokens"].shape, "float32")
            if grad is None
            else grad.detach().cpu().numpy()
            for role, grad in grads.items()
        }

    return ArgsKwargs(args=(X.method,), kwargs=kwargs), d_text_tokens


def convert_outputs(model: Model, inputs_outputs, is_train: bool):
    _, Ytorch = inputs_outputs
    Y = to_numpy(Ytorch)

    def get_d_torch(dY: Any) -> ArgsKwargs:
        import torch

        loss = Ytorch["loss"]
        return ArgsKwargs(args=(loss,), kwargs={"grad_tensors": torch.ones_like(loss)})

    return Y, get_d_torch
