"""Step checkpoints of an incremental task sequence: everything needed to resume exactly.

A checkpoint is a local directory (the platform uploads it to S3 through Ray Train) holding
``state.pt`` (model, last optimizers and schedulers, strategy state, memory, RNG states, results
so far, step index) and ``config.yaml`` (the resolved config, for people). It is written to a
temporary directory and renamed, so a crash never leaves a half-written checkpoint behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from contavsep.config import Config, ConfigError, flat, from_flat, to_yaml
from contavsep.errors import ContavsepError

STATE_FILE = "state.pt"
FORMAT_VERSION = 1


class CheckpointError(ContavsepError, ValueError):
    """A checkpoint is missing, incomplete, or belongs to another configuration."""


@dataclass
class TrainingState:
    """What a trial carries from one incremental step to the next."""

    step: int  # the last completed step
    config: Config
    model: dict[str, Any]
    num_classes: int
    optimizers: list[dict[str, Any]]
    schedulers: list[dict[str, Any]]
    strategy: dict[str, Any]
    memory: dict[str, Any]
    results: dict[str, Any]
    rng: dict[str, Any]
    data_content_hash: str = ""  # the dataset's manifest content hash ("" = checkpoints older than it)
    val_results: dict[str, Any] | None = None  # validation results (None: eval.validate off, or older checkpoints)


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(state: TrainingState, directory: str | Path) -> Path:
    """Write ``state`` to ``directory`` atomically (temp dir + rename). Returns the directory."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    try:
        payload = {
            "format_version": FORMAT_VERSION,
            "step": state.step,
            "config": flat(state.config),
            "model": state.model,
            "num_classes": state.num_classes,
            "optimizers": state.optimizers,
            "schedulers": state.schedulers,
            "strategy": state.strategy,
            "memory": state.memory,
            "results": state.results,
            "rng": state.rng,
            "data_content_hash": state.data_content_hash,
            "val_results": state.val_results,
        }
        torch.save(payload, tmp / STATE_FILE)
        (tmp / "config.yaml").write_text(to_yaml(state.config))
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(tmp, directory)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return directory


def load_checkpoint(directory: str | Path) -> TrainingState:
    """Read a checkpoint written by :func:`save_checkpoint` (on CPU; the engine moves tensors)."""
    path = Path(directory) / STATE_FILE
    if not path.is_file():
        raise CheckpointError(
            f"{directory} is not a contavsep checkpoint (no {STATE_FILE}); pass a step checkpoint directory"
        )
    payload = torch.load(path, map_location="cpu", weights_only=False)
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {payload.get('format_version')}, this version reads {FORMAT_VERSION}"
        )
    try:
        config = from_flat(payload["config"])
    except ConfigError as exc:  # e.g. its strategy, or a value its strategy now refuses
        raise CheckpointError(f"{path} holds a config this version cannot run: {exc}") from None
    return TrainingState(
        step=int(payload["step"]),
        config=config,
        model=payload["model"],
        num_classes=int(payload["num_classes"]),
        optimizers=payload["optimizers"],
        schedulers=payload["schedulers"],
        strategy=payload["strategy"],
        memory=payload["memory"],
        results=payload["results"],
        rng=payload["rng"],
        data_content_hash=str(payload.get("data_content_hash", "")),
        val_results=payload.get("val_results"),
    )


# Where the data lives, not what it is: a checkpoint may resume against a copy of its dataset
# elsewhere (the content hash is compared instead).
LOCATION_KEYS = ("data.uri", "data.cache_dir")


def check_resumable(state: TrainingState, cfg: Config, data_content_hash: str, where: str | Path) -> None:
    """Refuse to resume ``state`` under ``cfg``, naming the dotted keys that differ (locations in
    :data:`LOCATION_KEYS` excepted), or a dataset whose content differs from the checkpoint's."""
    stored, now = flat(state.config), flat(cfg)
    keys = list(dict.fromkeys([*now, *stored]))
    if stored.get("strategy.name") != now.get("strategy.name"):  # then its keys are another strategy's: noise
        keys = [k for k in keys if k == "strategy.name" or not k.startswith("strategy.")]
    diff = [
        f"{k}: {stored.get(k)!r} -> {now.get(k)!r}"
        for k in keys
        if k not in LOCATION_KEYS and stored.get(k) != now.get(k)
    ]
    if diff:
        more = f" (and {len(diff) - 3} more)" if len(diff) > 3 else ""
        raise CheckpointError(
            f"checkpoint {where} was written with another config: {'; '.join(diff[:3])}{more};"
            f" resume with the same settings"
        )
    if state.data_content_hash and data_content_hash and state.data_content_hash != data_content_hash:
        raise CheckpointError(
            f"checkpoint {where} was trained on dataset content {state.data_content_hash[:16]}, but"
            f" data.uri {cfg.data.uri} holds {data_content_hash[:16]}; resume with the same dataset"
        )
