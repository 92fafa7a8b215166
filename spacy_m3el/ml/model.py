"""The Thinc side of the model: M3ELNet behind Thinc's PyTorch wrapper.

The Thinc model takes a :class:`NetCall` (a task name and its numpy inputs)
and returns numpy outputs. For the ``"loss"`` task the backward pass starts
from the loss itself, so ``backprop`` needs no output gradient.
"""

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import numpy
import srsly
from thinc.api import ArgsKwargs, Model, PyTorchWrapper_v3

MODEL_FORMAT_VERSION = 1


@dataclass
class NetCall:
    """One call of the network: a task and its keyword inputs (numpy arrays, dicts of them)."""

    task: str
    inputs: Dict[str, Any] = field(default_factory=dict)


def build_m3el_model(net) -> Model:
    """Wrap an M3ELNet as a Thinc model whose ``init`` loads the pretrained encoder.

    net (M3ELNet): the network, built from config values.
    RETURNS (Model[NetCall, Dict[str, Any]]): the Thinc model.
    """
    wrapper = PyTorchWrapper_v3(
        net,
        convert_inputs=_convert_inputs,
        convert_outputs=_convert_outputs,
        serialize_model=serialize_net,
        deserialize_model=deserialize_net,
    )
    return Model(
        "m3el", _forward, layers=[wrapper], init=_init, attrs={"encoder_name": net.encoder.name}
    )


def get_net(model: Model):
    """The M3ELNet inside a model built by :func:`build_m3el_model`."""
    return model.layers[0].shims[0]._model


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


def rehome_parameters(model: Model) -> None:
    """Copy parameters updated by Thinc's optimizer back into torch-allocated memory.

    Thinc's ``finish_update`` replaces each parameter with a tensor that shares
    a numpy array's memory. BLAS kernels may round differently depending on
    memory alignment, so without this copy a trained model and the same model
    loaded from disk give scores that differ in the last bits.
    """
    for parameter in get_net(model).parameters():
        parameter.data = parameter.data.clone()


def _forward(model: Model, X: NetCall, is_train: bool):
    return model.layers[0](X, is_train)


def _init(model: Model, X: Optional[NetCall] = None, Y: Any = None) -> None:
    net = get_net(model)
    net.encoder.load_pretrained()


def _to_torch(value: Any, device) -> Any:
    import torch

    if isinstance(value, dict):
        return {key: _to_torch(item, device) for key, item in value.items()}
    if isinstance(value, numpy.ndarray):
        return torch.from_numpy(numpy.ascontiguousarray(value)).to(device)
    return value


def _to_numpy(value: Any) -> Any:
    import torch

    if isinstance(value, dict):
        return {key: _to_numpy(item) for key, item in value.items()}
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return value


def _convert_inputs(model: Model, X: NetCall, is_train: bool):
    device = model.shims[0].device
    kwargs = {"task": X.task, **_to_torch(X.inputs, device)}
    return ArgsKwargs(args=(), kwargs=kwargs), lambda d_inputs: X


def _convert_outputs(model: Model, inputs_outputs, is_train: bool):
    _, Ytorch = inputs_outputs
    Y = _to_numpy(Ytorch)

    def get_d_torch(dY: Any) -> ArgsKwargs:
        import torch

        loss = Ytorch["loss"]
        return ArgsKwargs(args=(loss,), kwargs={"grad_tensors": torch.ones_like(loss)})

    return Y, get_d_torch


def serialize_net(net) -> bytes:
    """Weights (safetensors) plus the encoder's config, tokenizer and processor."""
    from safetensors.torch import save

    state = {key: value.detach().contiguous().cpu() for key, value in net.state_dict().items()}
    return srsly.msgpack_dumps(
        {"version": MODEL_FORMAT_VERSION, "encoder": net.encoder.meta(), "state": save(state)}
    )


def deserialize_net(net, data: bytes, device) -> Any:
    """Rebuild the encoder from stored metadata, then load the weights (no pickle, no network).

    A rejected load leaves ``net`` as it was.
    """
    from safetensors.torch import load

    try:
        msg = srsly.msgpack_loads(data)
    except Exception as err:
        raise ValueError(
            f"The m3el_linker model data is corrupt and cannot be read: {err}"
        ) from err
    if not isinstance(msg, dict) or msg.get("version") != MODEL_FORMAT_VERSION:
        raise ValueError(
            "The m3el_linker model data has an unknown format. It was saved by an "
            "incompatible version of spacy_m3el; retrain or re-save the pipeline."
        )
    missing_keys = [key for key in ("encoder", "state") if key not in msg]
    if missing_keys:
        raise ValueError(
            f"The m3el_linker model data is incomplete (no {', '.join(missing_keys)}); re-save the pipeline."
        )
    try:
        state = load(msg["state"])
    except Exception as err:
        raise ValueError(
            f"The m3el_linker model data is corrupt: the weights cannot be read ({err})."
        ) from err
    saved_encoder = net.encoder.snapshot()
    try:
        net.encoder.restore(msg["encoder"])
        _check_state(net, state)
    except Exception as err:
        net.encoder.reinstate(saved_encoder)
        if isinstance(err, ValueError):
            raise
        raise ValueError(
            f"The m3el_linker model data is corrupt: bad encoder metadata ({type(err).__name__}: {err})."
        ) from err
    net.load_state_dict(state)
    return net.to(device)


def _check_state(net, state: Dict[str, Any]) -> None:
    missing, unexpected = _state_mismatch(net, state)
    if missing or unexpected:
        raise ValueError(
            "The saved m3el_linker weights do not match the model built from the config "
            f"(missing: {missing[:5]}, unexpected: {unexpected[:5]}). Was the config "
            "(units, widths) changed after training?"
        )
    for key, value in net.state_dict().items():
        if value.shape != state[key].shape:
            raise ValueError(
                f"Weight {key!r} has shape {tuple(state[key].shape)} in the saved model but "
                f"{tuple(value.shape)} in the model built from the config."
            )


def _state_mismatch(net, state: Dict[str, Any]):
    expected = set(net.state_dict())
    return sorted(expected - set(state)), sorted(set(state) - expected)
