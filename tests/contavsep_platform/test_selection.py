"""Select on validation, publish on test: what a space may choose on, what a confirmation stage
runs, and which runs a published table is computed from (against hand computation, no Ray)."""

from __future__ import annotations

import pytest

from contavsep_platform.comparison import t_interval
from contavsep_platform.search import configuration_id
from contavsep_platform.spaces import (
    SELECTION_NOTES,
    STRATEGY_KEY,
    SpaceError,
    fingerprint,
    parse_space,
    space_notes,
)
from contavsep_platform.sweep import (
    SweepOutcome,
    TrialRow,
    comparison_of,
    confirmation_plan,
    confirmation_trials,
    format_ranking,
    ranking_markdown,
)

BASE = 'name: sel\nbase: {preset: tiny, data.uri: "file:///tmp/none", data.num_steps: 4, data.classes_per_step: 2, train.seed: 7}\n'
LWF = "strategies:\n  finetune: {}\n  lwf:\n    strategy.lambda_dist: {choice: [0.1, 1.0]}\n"


def _space(extra: str = "", strategies: str = LWF):
    return parse_space(BASE + strategies + extra, storage_uri="file:///tmp")


def test_a_space_selecting_on_test_is_refused_unless_it_says_so():
    with pytest.raises(SpaceError, match=r"selects on the test split.*add 'select_on: test'"):
        _space("metric: test/sdr\n")
    with pytest.raises(SpaceError, match="selects on the test split"):
        _space("objectives:\n  - {metric: sdr, mode: max}\n  - {metric: test/forgetting/sdr, mode: min}\n")
    space = _space("metric: test/sdr\nselect_on: test\n")
    assert space.metric == "test/sdr" and space.metric_key == "sdr" and space.selection == "test"
    assert SELECTION_NOTES[space.selection] == "selected on test (optimistic)"
    bare = _space("select_on: test\n")  # a bare name is measured on the split the space selects on
    assert bare.metric == "test/sdr"
    assert _space().metric == "val/sdr" and _space().metric_key == "val/sdr"
    with pytest.raises(SpaceError, match="select_on must be"):
        _space("select_on: train\n")
    with pytest.raises(SpaceError, match="eval.validate=false"):
        parse_space(
            BASE.replace("train.seed: 7", "train.seed: 7, eval.validate: false") + LWF, storage_uri="file:///tmp"
        )
    # validation scores SDR alone unless the space asks for SIR/SAR there (a value it selects on)
    with pytest.raises(SpaceError, match=r"'val/forgetting/sir' needs SIR/SAR on validation.*eval.val_metrics: all"):
        _space("objectives:\n  - {metric: sdr, mode: max}\n  - {metric: forgetting/sir, mode: min}\n")
    with pytest.raises(SpaceError, match="'val/sar_new' needs SIR/SAR"):
        _space("metric: sar_new\n")
    full = parse_space(
        BASE.replace("train.seed: 7", "train.seed: 7, eval.val_metrics: all") + LWF + "metric: sir\n",
        storage_uri="file:///tmp",
    )
    assert full.metric_key == "val/sir"
    assert _space("metric: sdri\n").metric_key == "val/sdri"  # the SDR improvement needs no SIR/SAR


def test_a_method_is_strategy_memory_and_factors_and_only_a_choice_within_one_is_a_selection():
    grid = "strategies:\n  finetune: {}\n  lwf: {}\ncommon:\n  memory.per_class: {choice: [0, 1]}\n  model.name: {choice: [iquery, coseparation]}\n"
    assert _space("factors: [model.name]\n", grid).selection == "none"
    assert _space("", grid).selection == "val"  # without the factor, model.name is chosen per method
    with pytest.raises(SpaceError, match="nothing to confirm"):
        _space("factors: [model.name]\nconfirm: {seeds: 2}\n", grid)
    with pytest.raises(SpaceError, match="a factor is a table row"):
        _space(
            "factors: [strategy.lambda_dist]\n",
            "strategies:\n  lwf:\n    strategy.lambda_dist: {uniform: [0.1, 1.0]}\n",
        )
    with pytest.raises(SpaceError, match="seeds are repeats"):
        _space("factors: [train.seed]\n")
    notes = space_notes(_space("factors: [model.name]\n", grid))
    assert notes[0].startswith("selection: none")


def test_confirmation_seeds_never_overlap_the_search_seeds_and_keep_its_class_orders():
    space = _space("repeats: {seeds: 2, class_orders: 2}\nconfirm: {seeds: 3}\n")
    search_seeds = {v["train.seed"] for v in space.repeat_members().values()}
    confirm = space.stage("confirm")
    members = confirm.repeat_members()
    assert search_seeds == {7, 8}
    assert {v["train.seed"] for v in members.values()} == {9, 10, 11}
    assert {(v["data.shuffle_classes"], v["data.seed"]) for v in members.values()} == {(False, 0), (True, 1)}
    assert len(members) == 6 and not set(members) & set(space.repeat_members())  # labels differ too
    assert confirm.scheduler.type == "fifo" and confirm.num_steps == 4


def test_first_tasks_searches_k_tasks_and_confirms_on_the_full_stream():
    space = _space(
        "protocol: {type: first_tasks, tasks: 2}\nconfirm: {seeds: 1}\nscheduler: {type: asha, grace_period: 2}\n"
    )
    params = {STRATEGY_KEY: "lwf", "strategy.lambda_dist": 1.0}
    search, confirm = space.stage("search"), space.stage("confirm")
    assert search.num_steps == 2 and search.trial_config(params).data.num_steps == 2
    assert confirm.num_steps == 4 and confirm.trial_config(params).data.num_steps == 4
    assert any("never stops a trial early" in n for n in space_notes(space))  # k = 2, grace 2: no rung left
    assert any("first 2 of 4 tasks" in n for n in space_notes(space))
    assert _space("protocol: first_tasks\nconfirm: {seeds: 1}\n").protocol.tasks == 2
    with pytest.raises(SpaceError, match="add confirm"):
        _space("protocol: first_tasks\n")
    with pytest.raises(SpaceError, match="tasks < data.num_steps"):
        _space("protocol: {type: first_tasks, tasks: 4}\nconfirm: {seeds: 1}\n")
    with pytest.raises(SpaceError, match="protocol must be one of"):
        _space("protocol: first_task\nconfirm: {seeds: 1}\n")


def test_the_resume_fingerprint_covers_selection_confirmation_and_protocol():
    plain = fingerprint(_space())
    for extra in ("select_on: test\n", "confirm: {seeds: 2}\n", "protocol: first_tasks\nconfirm: {seeds: 1}\n"):
        changed = fingerprint(_space(extra))
        assert {k for k in plain if plain[k] != changed.get(k)} & {"select_on", "confirm", "protocol", "objectives"}


def _row(
    space,
    trial_id: str,
    strategy: str,
    lam: float | None,
    repeat: str,
    val: float,
    test: float,
    stage: str = "search",
    status: str = "complete",
) -> TrialRow:
    params = {STRATEGY_KEY: strategy, **({"strategy.lambda_dist": lam} if lam is not None else {})}
    metrics = {"sdr": test, "sir": test + 1, "sar": test + 2, "forgetting/sdr": 1.0, "val/sdr": val}
    return TrialRow(
        trial_id,
        strategy,
        status,
        4,
        params,
        metrics,
        group=configuration_id(space, params),
        repeat=repeat,
        stage=stage,
    )


def test_the_confirmed_table_is_computed_from_the_confirmation_runs_only():
    """By hand. Search (seeds s0, s1): LwF λ=0.1 has val 6, 4 (mean 5) and test 1, 1; LwF λ=1.0
    val 3, 3 and test 9, 9 (it would win on test); fine-tuning val 2, 2. Validation picks λ=0.1.
    Confirmation (fresh seeds s2, s3): λ=0.1 test 2, 4 -> 3.0; fine-tuning 1, 2 -> 1.5; paired
    Δ = (1, 2) -> 1.5. The search's test values (1, 9) never enter the table."""
    space = _space("repeats: {seeds: 2}\nconfirm: {seeds: 2}\n")
    search_rows = [
        _row(space, "a", "lwf", 0.1, "s0-o0", 6.0, 1.0),
        _row(space, "b", "lwf", 0.1, "s1-o0", 4.0, 1.0),
        _row(space, "c", "lwf", 1.0, "s0-o0", 3.0, 9.0),
        _row(space, "d", "lwf", 1.0, "s1-o0", 3.0, 9.0),
        _row(space, "e", "finetune", None, "s0-o0", 2.0, 0.0),
        _row(space, "f", "finetune", None, "s1-o0", 2.0, 0.0),
    ]
    search = comparison_of(search_rows, space)
    assert [
        r.configuration.params.get("strategy.lambda_dist") for r in search.rows if r.configuration.strategy == "lwf"
    ] == [0.1]
    outcome = SweepOutcome("s", "file:///x", "sdr", "max", search_rows, search, False, 1.0)
    plan = confirmation_plan(space, outcome)
    assert sorted(c["params"].get("strategy.lambda_dist") for c in plan["configurations"] if "lwf" in c["method"]) == [
        0.1
    ]
    assert {c["method"]: c["chosen_on"]["mean"] for c in plan["configurations"]} == {
        "lwf (mem 1)": 5.0,
        "finetune (mem 1)": 2.0,
    }
    trials = confirmation_trials(plan)
    assert len(trials) == 4 and {t["train.seed"] for t in trials} == {9, 10}  # base seed 7: search used 7, 8
    assert {t["repeat"] for t in trials} == {"s2-o0", "s3-o0"}

    confirm = space.stage("confirm")
    confirm_rows = [
        _row(confirm, "g", "lwf", 0.1, "s2-o0", 0.0, 2.0, "confirm"),
        _row(confirm, "h", "lwf", 0.1, "s3-o0", 0.0, 4.0, "confirm"),
        _row(confirm, "i", "finetune", None, "s2-o0", 0.0, 1.0, "confirm"),
        _row(confirm, "j", "finetune", None, "s3-o0", 0.0, 2.0, "confirm"),
    ]
    chosen_on = {c["group"]: t_interval(c["chosen_on"]["values"]) for c in plan["configurations"]}
    table = comparison_of(confirm_rows, confirm, chosen_on)
    top, second = table.rows
    assert (
        top.configuration.method == "lwf (mem 1)" and top.estimates["sdr"].mean == 3.0 and top.estimates["sdr"].n == 2
    )
    assert {r.run_id for r in top.configuration.runs} == {"g", "h"}
    assert top.chosen_on.mean == 5.0 and top.gap == -2.0
    assert top.vs_reference.mean == 1.5 and top.vs_reference.values == (1.0, 2.0)
    assert second.estimates["sdr"].mean == 1.5 and second.gap == -0.5
    assert "confirmed on 2 fresh run(s)" in table.selection

    confirmed = SweepOutcome(
        "s", "file:///x", "sdr", "max", [*search_rows, *confirm_rows], table, False, 1.0, search=search, confirmed=True
    )
    text = format_ranking(confirmed)
    assert all(len(line) <= 120 for line in text.splitlines()[:3]), text  # the console table fits a terminal
    assert "5.00" in text and "-2.00" in text
    md = ranking_markdown(confirmed)
    assert "Selection: selected on validation, confirmed" in md and "Configurations of the search" in md


def test_without_confirmation_the_table_chooses_on_validation_and_says_so():
    """By hand: LwF λ=1.0 leads on test (9) but λ=0.1 on validation (5 > 3): the table shows
    λ=0.1's test mean 1.0, chosen on 5.0; with select_on: test it shows λ=1.0, labelled optimistic."""
    space = _space("repeats: {seeds: 2}\n")
    rows = [
        _row(space, "a", "lwf", 0.1, "s0-o0", 6.0, 1.0),
        _row(space, "b", "lwf", 0.1, "s1-o0", 4.0, 1.0),
        _row(space, "c", "lwf", 1.0, "s0-o0", 3.0, 9.0),
        _row(space, "d", "lwf", 1.0, "s1-o0", 3.0, 9.0),
    ]
    (row,) = comparison_of(rows, space).rows
    assert row.configuration.params["strategy.lambda_dist"] == 0.1 and row.estimates["sdr"].mean == 1.0
    assert row.chosen_on.mean == 5.0 and "not confirmed" in comparison_of(rows, space).selection
    optimistic = _space("repeats: {seeds: 2}\nselect_on: test\n")
    comparison = comparison_of(rows, optimistic)
    (row,) = comparison.rows
    assert row.configuration.params["strategy.lambda_dist"] == 1.0 and row.estimates["sdr"].mean == 9.0
    assert row.chosen_on is None and comparison.selection == "selected on test (optimistic)"
    outcome = SweepOutcome("s", "file:///x", "sdr", "max", rows, comparison, False, 1.0)
    assert "selected on test (optimistic)" in ranking_markdown(outcome)


def test_a_multi_objective_space_confirms_each_methods_best_and_its_validation_pareto_set_capped():
    """By hand, on (val/sdr max, val/forgetting/sdr min): a (5, 2), b (6, 3), c (7, 5), d (3, 4).
    The front is c, b, a (d is dominated by a); capped at 2 it keeps c and b; the method's best
    by val/sdr is c. Confirmed, the method keeps c (chosen on 7 > 6) even where b's confirmation
    runs score higher on validation: the choice is never made again on other runs."""
    space = _space(
        "repeats: {seeds: 1}\nconfirm: {seeds: 1, max_pareto: 2}\nobjectives:\n  - {metric: sdr, mode: max}\n"
        "  - {metric: forgetting/sdr, mode: min}\n",
        "strategies:\n  lwf:\n    strategy.lambda_dist: {choice: [0.1, 0.3, 1.0, 3.0]}\n",
    )
    assert [o.key for o in space.objectives] == ["val/sdr", "val/forgetting/sdr"]

    def row(trial_id, lam, val, forgetting, test=0.0, stage="search", repeat="s0-o0"):
        params = {STRATEGY_KEY: "lwf", "strategy.lambda_dist": lam}
        metrics = {"sdr": test, "forgetting/sdr": 1.0, "val/sdr": val, "val/forgetting/sdr": forgetting}
        return TrialRow(
            trial_id,
            "lwf",
            "complete",
            4,
            params,
            metrics,
            group=configuration_id(space, params),
            repeat=repeat,
            stage=stage,
        )

    rows = [row("a", 0.1, 5.0, 2.0), row("b", 0.3, 6.0, 3.0), row("c", 1.0, 7.0, 5.0), row("d", 3.0, 3.0, 4.0)]
    outcome = SweepOutcome("s", "file:///x", "sdr", "max", rows, comparison_of(rows, space), False, 1.0)
    plan = confirmation_plan(space, outcome)
    assert [(c["params"]["strategy.lambda_dist"], c["chosen_on"]["mean"]) for c in plan["configurations"]] == [
        (1.0, 7.0),
        (0.3, 6.0),
    ]
    confirm = space.stage("confirm")
    confirmed = [
        row("e", 1.0, 0.0, 9.0, test=2.0, stage="confirm", repeat="s1-o0"),
        row("f", 0.3, 100.0, 0.0, test=3.0, stage="confirm", repeat="s1-o0"),
    ]
    chosen_on = {c["group"]: t_interval(c["chosen_on"]["values"]) for c in plan["configurations"]}
    (ranked,) = comparison_of(confirmed, confirm, chosen_on).rows
    assert ranked.configuration.params["strategy.lambda_dist"] == 1.0 and ranked.estimates["sdr"].mean == 2.0


def test_a_method_is_compared_with_fine_tuning_of_the_same_factor_values():
    """Table 1 rows per separator: ContAV-Sep with Co-Separation is paired with fine-tuning with
    Co-Separation (Δ 1 by hand), never with fine-tuning with iQuery (which would give Δ -9)."""
    space = _space(
        "factors: [model.name]\nrepeats: {seeds: 2}\n",
        "strategies:\n  finetune: {}\n  contavsep: {}\ncommon:\n  model.name: {choice: [iquery, coseparation]}\n",
    )

    def row(trial_id, strategy, model, repeat, test):
        params = {STRATEGY_KEY: strategy, "model.name": model}
        return TrialRow(
            trial_id,
            strategy,
            "complete",
            4,
            params,
            {"sdr": test, "val/sdr": 0.0},
            group=configuration_id(space, params),
            repeat=repeat,
        )

    rows = [
        row("a", "finetune", "iquery", "s0-o0", 11.0),
        row("b", "finetune", "iquery", "s1-o0", 11.0),
        row("c", "finetune", "coseparation", "s0-o0", 1.0),
        row("d", "finetune", "coseparation", "s1-o0", 1.0),
        row("e", "contavsep", "coseparation", "s0-o0", 2.0),
        row("f", "contavsep", "coseparation", "s1-o0", 2.0),
    ]
    comparison = comparison_of(rows, space)
    assert comparison.selection == "no selection: every configuration of each method ran"
    by_method = {r.configuration.method: r for r in comparison.rows}
    assert set(by_method) == {
        "finetune (mem 1, iquery)",
        "finetune (mem 1, coseparation)",
        "contavsep (mem 1, coseparation)",
    }
    cv = by_method["contavsep (mem 1, coseparation)"]
    assert cv.reference == "finetune (mem 1, coseparation)" and cv.vs_reference.mean == 1.0


@pytest.mark.slow
def test_a_real_sweep_searches_confirms_resumes_after_an_interrupt_in_confirmation_and_leaves_no_running_run(
    services, s3_dataset, tmp_path
):
    """smoke.yaml with a confirmation stage on local Ray, the local S3 and MLflow servers:
    SIGTERM once a confirmation trial has checkpointed a step, then --resume: the stored choice is
    not made again, the confirmation trials finish on seeds the search never used, the table
    comes from them, the report says so, and no MLflow run of the sweep is left RUNNING."""
    import os
    import signal
    import threading
    import time
    from dataclasses import replace

    import ray
    from mlflow import MlflowClient

    from contavsep import storage
    from contavsep_platform.report import write_report
    from contavsep_platform.settings import service_env
    from contavsep_platform.spaces import (
        ConfirmSpec,
        load_space,
        shipped_spaces_dir,
        validate_space,
    )
    from contavsep_platform.sweep import (
        CONFIRM_DIR,
        CONFIRMATION_FILE,
        connect_ray,
        job_placement_groups,
        run_sweep,
    )

    space = load_space(
        shipped_spaces_dir() / "smoke.yaml",
        storage_uri=services.storage_uri,
        overrides={"data.uri": s3_dataset, "train.iters_per_step": "30"},
    )
    space = validate_space(replace(space, confirm=ConfirmSpec(seeds=2)))
    env = service_env(services)
    name = f"confirm-test-{int(time.time())}"
    sweep_uri = storage.join(services.storage_uri, "sweeps", name)
    kwargs = dict(
        storage_uri=services.storage_uri,
        name=name,
        tracking_uri=services.mlflow_tracking_uri,
        s3=services.s3,
        env=env,
        verbose=0,
    )
    sent = threading.Event()

    def confirmation_step_checkpointed() -> bool:
        try:
            stage = [
                n.removeprefix("tune-")
                for n in storage.list_dir(storage.join(sweep_uri, CONFIRM_DIR), services.s3)
                if n.startswith("tune-")
            ]
            return any("step=0" in storage.list_dir(storage.join(sweep_uri, t), services.s3) for t in stage)
        except Exception:  # noqa: BLE001 - not there yet
            return False

    def stop_in_confirmation() -> None:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline and not sent.is_set():
            if confirmation_step_checkpointed():
                sent.set()
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(0.5)

    started = connect_ray(None, env) if not ray.is_initialized() else False
    watcher = threading.Thread(target=stop_in_confirmation, daemon=True)
    try:
        watcher.start()
        stopped = run_sweep(space, **kwargs)
        assert sent.is_set() and stopped.interrupted and stopped.confirmed
        plan_uri = storage.join(sweep_uri, CONFIRMATION_FILE)
        plan = storage.read_bytes(plan_uri, services.s3)
        assert job_placement_groups() == []

        outcome = run_sweep(space, resume=True, **kwargs)
        assert not outcome.interrupted and outcome.confirmed and not outcome.errored
        assert storage.read_bytes(plan_uri, services.s3) == plan  # the choice was not made again
        search = [r for r in outcome.trials if r.stage == "search"]
        confirm = [r for r in outcome.trials if r.stage == CONFIRM_DIR]
        assert len(search) == 2 and {r.repeat for r in search} == {"s0-o0"}
        assert (
            confirm
            and {r.repeat for r in confirm} == {"s1-o0", "s2-o0"}
            and all(r.status == "complete" for r in confirm)
        )
        assert {r.group for r in confirm} <= {r.group for r in search}
        ranked = {run.run_id for row in outcome.comparison.rows for run in row.configuration.runs}
        assert ranked and ranked <= {r.trial_id for r in confirm}
        assert all(row.chosen_on is not None and row.estimates["sdr"].n == 2 for row in outcome.comparison.rows)
        assert all("val/sdr" in r.metrics and "sdr" in r.metrics for r in confirm)

        client = MlflowClient(services.mlflow_tracking_uri)
        parent = client.get_run(outcome.parent_run_id)
        assert parent.info.status == "FINISHED" and "validation" in parent.data.tags["contavsep.selection"]
        runs = client.search_runs([parent.info.experiment_id], f"tags.`contavsep.sweep` = '{name}'")
        assert [r.info.run_name for r in runs if r.info.status == "RUNNING"] == []
        (stage_run,) = [r for r in runs if r.data.tags.get("contavsep.role") == "stage"]
        assert stage_run.info.status == "FINISHED"
        confirm_runs = [
            r
            for r in runs
            if r.data.tags.get("contavsep.stage") == CONFIRM_DIR and r.data.tags.get("contavsep.role") == "trial"
        ]
        assert {r.data.tags["contavsep.trial"] for r in confirm_runs} == {r.trial_id for r in confirm}
        assert all(r.data.tags["mlflow.parentRunId"] == stage_run.info.run_id for r in confirm_runs)
        seeds = {r.data.params["train.seed"] for r in confirm_runs}
        search_seeds = {r.data.params["train.seed"] for r in runs if r.data.tags.get("contavsep.stage") == "search"}
        assert seeds == {"1", "2"} and search_seeds == {"0"}
        assert all("final/val/sdr" in r.data.metrics and "final/sdr" in r.data.metrics for r in confirm_runs)

        report = write_report(services.mlflow_tracking_uri, name, tmp_path / "report")
        assert "Selection: selected on validation, confirmed on 2 fresh run(s) per method" in report.markdown
        assert "## Ranking (confirmed configuration per method)" in report.markdown
        assert "## Configurations of the search" in report.markdown
    finally:
        sent.set()
        if started:
            ray.shutdown()
