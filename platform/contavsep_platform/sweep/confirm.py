"""The confirmation stage: the configurations a search chose, stored once, run again on fresh
repeats as their own Tune experiment."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from contavsep import storage
from contavsep_platform.comparison import Comparison, Configuration, Estimate, pareto_front
from contavsep_platform.spaces import CONFIRM_TRIAL_KEY, GROUP_KEY, REPEAT_KEY, SearchSpace
from contavsep_platform.sweep.console import _use_console
from contavsep_platform.sweep.error import SweepError
from contavsep_platform.sweep.names import _trial_dirname, _trial_name
from contavsep_platform.sweep.outcome import SweepOutcome, _rows, comparison_of, published_keys
from contavsep_platform.sweep.ray_cluster import PlacementGroupReaper, release_placement_groups
from contavsep_platform.trial import TrialContext, run_trial

log = logging.getLogger("contavsep.sweep")

CONFIRM_DIR = "confirm"  # <sweep>/confirm/: the confirmation stage's Tune experiment
CONFIRMATION_FILE = "confirmation.json"  # <sweep>/confirmation.json: the stored choice
CONFIRMATION_FORMAT = 1


def choose_configurations(space: SearchSpace, search: Comparison) -> list[Configuration]:
    """What the confirmation stage runs: the best complete configuration of each method by the
    space's selection metric (``search``'s rows); with several objectives also the Pareto set
    over the objectives as selected (best first by the first objective, at most
    ``confirm.max_pareto``), so the confirmed front and every method's row exist."""
    chosen = [row.configuration for row in search.rows]
    if len(space.objectives) > 1:
        objectives = [(o.key, o.mode) for o in space.objectives]
        front = pareto_front(search.configurations, objectives)
        first, mode = objectives[0]
        front.sort(key=lambda c: c.estimate(first).mean, reverse=mode == "max")
        ids = {c.config_id for c in chosen}
        chosen += [c for c in front[: space.confirm.max_pareto] if c.config_id not in ids]
    return chosen


def confirmation_plan(space: SearchSpace, outcome: SweepOutcome) -> dict[str, Any]:
    """The stored choice (:data:`CONFIRMATION_FILE`): the chosen configurations with their
    parameters and the estimate they were chosen on, and the fresh repeats they run on."""
    params_of = {r.group: r.params for r in outcome.trials}
    chosen = choose_configurations(space, outcome.comparison)
    if not chosen:
        raise SweepError(
            f"no configuration of the search completed all its runs with {space.metric} defined: nothing to"
            f" confirm (see the trials' errors); start a new --name once that is fixed"
        )
    confirm = space.stage("confirm")
    return {
        "format": CONFIRMATION_FORMAT,
        "selected_by": space.metric,
        "selection": space.selection_text(confirm.repeats.count),
        "repeats": {label: values for label, values in confirm.repeat_members().items()},
        "configurations": [
            {
                "group": c.config_id,
                "method": c.method,
                "params": params_of[c.config_id],
                "chosen_on": _estimate_doc(c.estimate(space.metric_key)),
            }
            for c in chosen
        ],
    }


def _estimate_doc(e: Estimate) -> dict[str, Any]:
    return {"mean": e.mean, "low": e.low, "high": e.high, "n": e.n, "sd": e.sd, "values": list(e.values)}


def confirmation_trials(plan: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One Tune config per chosen configuration and fresh repeat (its group is the search's)."""
    return [
        {**c["params"], **values, GROUP_KEY: c["group"], REPEAT_KEY: label}
        for c in plan["configurations"]
        for label, values in plan["repeats"].items()
    ]


def run_confirm_trial(config: dict[str, Any], context: TrialContext) -> None:
    """The confirmation stage's Tune trainable: one grid value holds the trial's parameters."""
    run_trial(config[CONFIRM_TRIAL_KEY], context)


@dataclass
class ConfirmStage:
    """The second stage of a sweep whose space has ``confirm``: the choice is stored first
    (:data:`CONFIRMATION_FILE`, never made again on ``--resume``), then its trials run as their
    own FIFO Tune experiment (``<sweep>/confirm/``, resumable like the search) whose MLflow runs
    nest under one ``confirm`` run; Optuna and ASHA never see them."""

    space: SearchSpace
    name: str
    sweep_path: str  # the search's Tune experiment (Ray's path form)
    sweep_uri: str
    filesystem: Any
    s3: storage.S3Settings | None
    tracking_uri: str | None
    parent_run_id: str | None

    def plan(self, outcome: SweepOutcome) -> dict[str, Any]:
        uri = storage.join(self.sweep_uri, CONFIRMATION_FILE)
        if storage.exists(uri, self.s3):
            return json.loads(storage.read_bytes(uri, self.s3))
        plan = confirmation_plan(self.space, outcome)
        storage.write_bytes_atomic(uri, json.dumps(plan, indent=1, default=str).encode(), self.s3)
        log.info(
            "sweep %s: confirming %d configuration(s) on %d fresh repeat(s) each (%s)",
            self.name,
            len(plan["configurations"]),
            len(plan["repeats"]),
            uri,
        )
        return plan

    def run(
        self,
        search: SweepOutcome,
        storage_uri: str,
        driver_resources: dict[str, float],
        max_concurrent: int,
        callbacks: Sequence[Any],
        verbose: int,
        started: float,
    ) -> SweepOutcome:
        from ray import tune

        plan = self.plan(search)
        trials = confirmation_trials(plan)
        confirm = self.space.stage("confirm")
        stage_run = None
        if self.tracking_uri and self.parent_run_id:
            from contavsep_platform.tracking import open_stage_run

            # None when MLflow is out: the confirmation trials' runs then nest under the parent
            stage_run = open_stage_run(self.tracking_uri, self.parent_run_id, self.name, CONFIRM_DIR, plan["selection"])
        context = TrialContext(
            sweep_name=self.name,
            storage_uri=storage_uri,
            space=confirm,
            tracking_uri=self.tracking_uri,
            parent_run_id=stage_run or self.parent_run_id,
            stage=CONFIRM_DIR,
        )
        trainable = tune.with_resources(tune.with_parameters(run_confirm_trial, context=context), driver_resources)
        path = f"{self.sweep_path.rstrip('/')}/{CONFIRM_DIR}"
        if tune.Tuner.can_restore(path, storage_filesystem=self.filesystem):
            tuner = tune.Tuner.restore(
                path, trainable, resume_unfinished=True, resume_errored=True, storage_filesystem=self.filesystem
            )
            _use_console(tuner, verbose, callbacks)
        else:
            tuner = tune.Tuner(
                trainable,
                param_space={CONFIRM_TRIAL_KEY: tune.grid_search(trials)},
                tune_config=tune.TuneConfig(
                    num_samples=1,
                    max_concurrent_trials=max_concurrent,
                    trial_name_creator=_trial_name,
                    trial_dirname_creator=_trial_dirname,
                ),
                run_config=tune.RunConfig(
                    name=CONFIRM_DIR,
                    storage_path=self.sweep_path,
                    storage_filesystem=self.filesystem,
                    callbacks=[PlacementGroupReaper(), *callbacks],
                    verbose=verbose,
                ),
            )
        rows = _rows(tuner.fit(), confirm, storage.join(self.sweep_uri, CONFIRM_DIR), stage=CONFIRM_DIR)
        release_placement_groups()
        interrupted = len(rows) < len(trials) or any(r.status in ("pending", "interrupted") for r in rows)
        chosen_on = {
            c["group"]: Estimate(**{**c["chosen_on"], "values": tuple(c["chosen_on"]["values"])})
            for c in plan["configurations"]
        }
        comparison = comparison_of(rows, confirm, chosen_on)
        objectives = tuple(zip(published_keys(confirm), (o.mode for o in confirm.objectives)))
        pareto = (
            tuple(c.config_id for c in pareto_front(comparison.configurations, objectives))
            if len(objectives) > 1
            else ()
        )
        if self.tracking_uri and stage_run is not None:  # a stage run is only opened with tracking
            from contavsep_platform.tracking import end_stage_run

            end_stage_run(
                self.tracking_uri,
                stage_run,
                "KILLED" if interrupted else "FAILED" if any(r.status == "error" for r in rows) else "FINISHED",
            )
        return replace(
            search,
            trials=[*search.trials, *rows],
            comparison=comparison,
            search=search.comparison,
            confirmed=True,
            interrupted=interrupted,
            pareto=pareto,
            objectives=objectives if len(objectives) > 1 else (),
            wall_seconds=time.perf_counter() - started,
        )
