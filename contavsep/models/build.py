"""Build a separator from the config (by name, through the registry) and load its weights."""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

import torch
from torch import Tensor, nn

from contavsep.config import Config
from contavsep.models.separator import Separator
from contavsep.models.unet import set_decoder_conv, set_encoder_conv
from contavsep.models.weights_file import WeightsError, weights_path
from contavsep.registry import MODELS


def build_model(cfg: Config, num_classes: int) -> Separator:
    """The separator named by ``cfg.model.name`` with ``num_classes`` classes.

    ``cfg.train.decoder_conv`` / ``encoder_conv`` pick how its U-Net computes (speed options). If
    ``cfg.model.weights`` is set, those weights are loaded (strictly, see :func:`load_weights`).
    """
    model = MODELS.get(cfg.model.name)(cfg.model, num_classes)
    set_decoder_conv(model, cfg.train.decoder_conv)  # how, not what: same parameters and function
    set_encoder_conv(model, cfg.train.encoder_conv)
    if cfg.model.weights:
        load_weights(model, cfg.model.weights)
    return model


def _read_state_dict(source: str | Path | BinaryIO) -> Mapping[str, Tensor]:
    if isinstance(source, (str, Path)):
        path = weights_path(source)
        data = path.read_bytes()
        name = str(path)
    else:
        data = source.read()
        name = getattr(source, "name", "<stream>")
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or foreign files
        raise WeightsError(
            f"model weights {name}: not a readable torch state_dict ({exc.__class__.__name__}: {exc})"
        ) from exc
    # Accept a bare state_dict or a checkpoint dict that nests it under "model" / "state_dict".
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict"):
            inner = obj.get(key)
            if isinstance(inner, Mapping) and not any(isinstance(v, Tensor) for v in obj.values()):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()):
        raise WeightsError(f"model weights {name}: expected a mapping of parameter names to tensors")
    return obj


def load_weights(model: nn.Module, source: str | Path | BinaryIO) -> None:
    """Load a state_dict into ``model`` strictly, with errors that name every mismatch.

    Args:
        source: a local path, a ``file://`` URI, or an open binary stream (e.g. from S3 storage).
            The file holds a state_dict, or a dict with it under ``"model"`` or ``"state_dict"``.

    Raises:
        WeightsError: unreadable file, missing or unexpected keys, or shape mismatches. A
            mismatch of the class queries says how many classes the weights were saved with.
    """
    state = _read_state_dict(source)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or mismatched:
        lines = [f"model weights do not fit {type(model).__name__}:"]

        def listed(title: str, keys: list[str]) -> None:
            if keys:
                shown = ", ".join(keys[:8]) + (f", ... ({len(keys) - 8} more)" if len(keys) > 8 else "")
                lines.append(f"  {title} ({len(keys)}): {shown}")

        listed("missing keys", missing)
        listed("unexpected keys", unexpected)
        for k in mismatched[:8]:
            lines.append(f"  shape of {k}: weights {tuple(state[k].shape)}, model {tuple(own[k].shape)}")
        if "class_queries" in mismatched:
            lines.append(
                f"  the weights have {state['class_queries'].shape[0]} class queries: "
                f"call model.expand_classes({state['class_queries'].shape[0]}) before loading"
            )
        raise WeightsError("\n".join(lines))
    model.load_state_dict(state, strict=True)
