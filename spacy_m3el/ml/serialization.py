"""Saving and loading the M3EL network's weights and encoder files (no pickle, no network)."""

from typing import Any, Dict

import srsly

MODEL_FORMAT_VERSION = 1


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
            f"The m3el_linker model data is incomplete (no {', '.join(missing_keys)}); "
            "re-save the pipeline."
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
            "The m3el_linker model data is corrupt: bad encoder metadata "
            f"({type(err).__name__}: {err})."
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
