"""Shared first steps: trials whose step 0 is provably the same train it once.

Step 0 of a class-incremental sequence has no old model and no memory, so for most strategies
it is plain supervised training on the first task: a sweep of 8 strategies x 2 memory sizes
trains the same step 0 sixteen times. A trial that trained step 0 publishes what the rest of
the sequence needs from that training, the **first-step state**, under a content-addressed key
on the sweep's storage; a later trial with the same key loads it instead of training.

The state is taken at the end of step 0's iterations, before ``after_task``: the model after
its last update (or the best validated one), the optimizers and schedulers, the training
sampler's generator (EWC's Fisher draws continue from it) and torch's generators, and the
step's loss means. Everything after that point (``after_task``, memory selection, evaluation,
the step checkpoint) still runs in every trial, so each trial's own checkpoints and metrics are
complete and, on CPU, bit-identical to a run that trained step 0 itself (tested).

The key hashes every config key that can change step 0's iterations:

- all of ``flat(cfg)`` except: where the data lives (its content hash is hashed instead),
  ``memory.*`` (memory is empty during step 0: it is filled after it), ``eval.*`` unless
  ``train.select=best_val`` (validation picks the model then), the speed-only ``train.*`` keys
  of :data:`contavsep.config.SPEED_KEYS` (same results up to float rounding, like any GPU rerun), and the
  ``strategy.*`` keys;
- the strategy's step-0 identity (:attr:`Strategy.first_step`): ``plain`` strategies (no
  step-0 loss term other than identically zero ones, no batch or gradient changes) share one
  group whatever their name and hyperparameters; ``own`` strategies (ContAV-Sep and AV-CIL
  add CrossSDC at step 0) share only with the same strategy and the same ``strategy.*`` values;
- the dataset's content hash (no hash: no sharing) and the number of DDP ranks (1: sharing is
  off under DDP, whose ranks each draw their own batches).

Like a step checkpoint, a published state belongs to the code that wrote it: a sweep resumed
after a change to step-0 training should start a new sweep (or delete ``first-steps/``).

Two trials that race both train step 0; the first to finish publishes (one atomic write), the
other finds the state there and keeps its own. A state that does not load is ignored (the
trial trains step 0 itself).
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass
from typing import Any

import torch

from contavsep import storage
from contavsep.checkpoint import LOCATION_KEYS
from contavsep.config import SPEED_KEYS, Config, flat
from contavsep.signature import signature

log = logging.getLogger("contavsep.first_step")

FORMAT_VERSION = 1
# Folder of the published states under a sweep (``<storage>/sweeps/<sweep>/first-steps/<key>.pt``).
FIRST_STEPS_DIR = "first-steps"
# Metric of every step of a sequence whose step 0 was keyed: 1 = loaded, 0 = trained here.
SHARED_KEY = "first_step/shared"
# Loss terms every step-0 state records (a strategy's identically-zero terms are its own).
SHARED_TERMS = ("main", "total")


@dataclass
class FirstStepState:
    """What the rest of a sequence needs from step 0's iterations."""

    key: str
    fields: dict[str, Any]  # what the key hashes (for people reading a published state)
    model: dict[str, Any]
    num_classes: int
    optimizers: list[dict[str, Any]]
    schedulers: list[dict[str, Any]]
    sampler: dict[str, Any]  # TrainingSampler.state_dict() after the step's draws
    rng: dict[str, Any]  # torch generators after the step's iterations (checkpoint.rng_state())
    losses: dict[str, float]  # loss means of the step's iterations, SHARED_TERMS (+ own terms for `own` strategies)
    iterations: int
    train_seconds: float  # how long the publishing trial trained


def key_fields(
    cfg: Config, first_step: str, strategy_params: dict[str, Any], data_content_hash: str, world_size: int
) -> dict[str, Any] | None:
    """The values step 0's iterations depend on, or None where sharing does not apply.

    ``first_step`` is the strategy's :attr:`Strategy.first_step` (``plain`` | ``own`` |
    ``never``); ``strategy_params`` its own hyperparameters (used for ``own``).
    """
    if first_step == "never" or not data_content_hash or world_size != 1 or not cfg.train.share_first_step:
        return None
    if first_step not in ("plain", "own"):
        raise ValueError(f"first_step must be plain, own or never, got {first_step!r}")
    eval_counts = cfg.train.select == "best_val"
    values = {
        k: v
        for k, v in flat(cfg).items()
        if k not in LOCATION_KEYS
        and k not in SPEED_KEYS
        and not k.startswith(("memory.", "strategy."))
        and (eval_counts or not k.startswith("eval."))
    }
    values["strategy"] = "plain" if first_step == "plain" else {"name": cfg.strategy.name, **strategy_params}
    values["data_content_hash"] = data_content_hash
    values["world_size"] = world_size
    values["format_version"] = FORMAT_VERSION
    return values


def trial_key(cfg: Config, data_content_hash: str, world_size: int = 1) -> tuple[str, dict[str, Any]] | None:
    """(key, key fields) of the step 0 that ``cfg`` trains, or None when it is not shared."""
    import dataclasses

    from contavsep.registry import STRATEGIES

    strategy = STRATEGIES.get(cfg.strategy.name)
    params = dataclasses.asdict(strategy.from_config(cfg.strategy).params)
    fields = key_fields(cfg, strategy.first_step, params, data_content_hash, world_size)
    return None if fields is None else (key_of(fields), fields)


def key_of(fields: dict[str, Any]) -> str:
    """The content address of a step-0 state: the configuration signature of its key fields
    (:func:`contavsep.signature.signature`, 24 hex digits)."""
    return signature(fields, 24)


class FirstStepStore:
    """Published step-0 states under one folder (a sweep's ``first-steps/``), file:// or s3://."""

    def __init__(self, uri: str, settings: storage.S3Settings | None = None):
        self.uri = uri
        self.settings = settings

    def _uri(self, key: str) -> str:
        return storage.join(self.uri, f"{key}.pt")

    def load(self, key: str) -> FirstStepState | None:
        """The state published under ``key``, or None (none yet, one that does not load, or the
        storage unreachable: one warning, and the trial trains step 0 itself)."""
        uri = self._uri(key)
        try:
            if not storage.exists(uri, self.settings):
                return None
            payload = torch.load(
                io.BytesIO(storage.read_bytes(uri, self.settings)), map_location="cpu", weights_only=False
            )
            state = FirstStepState(**payload["state"])
            if payload.get("format_version") != FORMAT_VERSION or state.key != key:
                raise ValueError(f"it holds format {payload.get('format_version')} key {state.key}")
            return state
        except Exception as exc:  # noqa: BLE001 - storage down, a cut or foreign file: train step 0 instead
            log.warning(
                "shared first step %s does not load (%s); training step 0 here", uri, " ".join(str(exc).split())[:200]
            )
            return None

    def publish(self, state: FirstStepState) -> bool:
        """Write ``state`` unless one is there already (the first trial to finish wins); False
        when it was there, or the storage refused (one warning: the trial goes on)."""
        uri = self._uri(state.key)
        try:
            if storage.exists(uri, self.settings):
                return False
            buffer = io.BytesIO()
            torch.save({"format_version": FORMAT_VERSION, "state": state.__dict__}, buffer)
            storage.write_bytes_atomic(uri, buffer.getvalue(), self.settings)
            storage.write_bytes_atomic(
                storage.join(self.uri, f"{state.key}.json"),
                json.dumps(state.fields, indent=1, sort_keys=True, default=str).encode(),
                self.settings,
            )
        except (storage.StorageError, OSError) as exc:  # sharing saves compute; it never fails the trial that trained
            log.warning("shared first step %s not published (%s)", uri, " ".join(str(exc).split())[:200])
            return False
        return True
