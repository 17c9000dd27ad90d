"""The sweep's persistent Optuna study (an Optuna journal): what optuna.load_study and
optuna-dashboard read, and how a restored searcher continues the same study (no Ray: the
searcher is driven as Tune drives it, pickled and restored as Tune does)."""

from __future__ import annotations

import json
import pickle
import signal
from dataclasses import replace
from wsgiref.util import setup_testing_defaults

import optuna
import pytest
from optuna.trial import TrialState
from ray.tune import Callback

from contavsep_platform.search import GroupedOptunaSearch
from contavsep_platform.spaces import GROUP_KEY, parse_space
from contavsep_platform.study import (
    JOURNAL_FILE,
    StudyJournal,
    fetch_journal,
    journal_uri,
)

SPACE = (
    'name: unit\nbase: {preset: tiny, data.uri: "file:///tmp/none", data.num_steps: 4, data.classes_per_step: 2}\n'
    "strategies:\n  lwf:\n    strategy.lambda_dist: {loguniform: [0.1, 3.0]}\n"
    "num_samples: 4\nrepeats: {seeds: 2}\npoints_to_evaluate:\n  - {strategy.name: lwf, strategy.lambda_dist: 1.0}\n"
)


def _final(sdr: float, steps: int = 4) -> dict:
    """A last result whose validation SDR (what Optuna is told) is ``sdr``; its test values differ."""
    return {"val/sdr": sdr, "sdr": sdr - 10.0, "forgetting/sdr": 1.0, "step": float(steps)}


def _load(path) -> optuna.Study:
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    return optuna.load_study(study_name="sweep-a", storage=storage)


def dashboard_get(storage: object, path: str) -> tuple[str, dict]:
    """One GET against optuna-dashboard's WSGI app (no server, no timers)."""
    import optuna_dashboard

    environ: dict = {"PATH_INFO": path, "REQUEST_METHOD": "GET"}
    setup_testing_defaults(environ)
    status: list[str] = []
    body = b"".join(optuna_dashboard.wsgi(storage)(environ, lambda s, headers, exc=None: status.append(s)))
    return status[0], json.loads(body)


def test_the_study_is_a_journal_that_optuna_and_the_dashboard_open_and_a_restored_searcher_continues(tmp_path):
    space = parse_space(SPACE, storage_uri="file:///tmp")
    uri = journal_uri(f"file://{tmp_path}/sweeps/sweep-a")
    searcher = GroupedOptunaSearch(space, StudyJournal(uri, "sweep-a"))
    first = [searcher.suggest(f"t{i}") for i in range(4)]  # two configurations x two seeds
    assert first[0]["strategy.lambda_dist"] == 1.0  # the point to evaluate comes first
    for i, sdr in enumerate((3.0, 5.0)):
        searcher.on_trial_complete(f"t{i}", _final(sdr))
    searcher.on_trial_complete("t2", _final(7.0))

    # What Tune does on a checkpoint: save(); the pickle holds no study and no local path.
    searcher.save(str(tmp_path / "searcher.pkl"))
    state = (tmp_path / "searcher.pkl").read_bytes()
    assert b"JournalStorage" not in state and b"_local" not in state

    # The journal, read by another process the way users read it.
    path = tmp_path / "sweeps" / "sweep-a" / JOURNAL_FILE
    study = _load(path)
    assert [(t.state, t.value) for t in study.trials] == [(TrialState.COMPLETE, 4.0), (TrialState.RUNNING, None)]
    assert study.trials[0].params == {"strategy.name": "lwf", "strategy.lambda_dist": 1.0}
    assert study.trials[0].user_attrs == {"configuration": first[0][GROUP_KEY], "repeats": 2}
    assert fetch_journal(uri, tmp_path / "unused") == path

    # The sweep goes on after its checkpoint, then is killed: a trial asked after the checkpoint
    # stays RUNNING in the journal, unknown to the restored searcher.
    searcher.suggest("t4")
    assert [t.state for t in _load(path).trials][-1] == TrialState.RUNNING

    # --resume: Tune unpickles the searcher it pickled at the start and restores the checkpoint.
    restored = pickle.loads(pickle.dumps(GroupedOptunaSearch(space, StudyJournal(uri, "sweep-a"))))
    restored.restore(str(tmp_path / "searcher.pkl"))
    restored.on_trial_complete("t3", _final(9.0))  # the second configuration's last member
    assert restored.suggest("t5")[GROUP_KEY] not in {c[GROUP_KEY] for c in first}
    study = _load(path)
    assert study.study_name == "sweep-a" and len(optuna.get_all_study_names(study._storage)) == 1
    states = [t.state for t in study.trials]
    assert states[:3] == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.FAIL]  # the lost one: FAIL
    assert study.trials[1].value == 8.0 and states[-1] == TrialState.RUNNING  # the new configuration
    # the re-seeded sampler may propose a configuration again: an alias told the group's outcome, not run
    assert all(t.user_attrs["same_as_trial"] in (0, 1) and t.state == TrialState.COMPLETE for t in study.trials[3:-1])
    assert len([p for p in study.trials if p.params.get("strategy.lambda_dist") == 1.0]) == 1  # enqueued once

    # optuna-dashboard's app on the same file: its API lists the study with its trials.
    from optuna_dashboard._storage_url import get_storage

    status, listing = dashboard_get(get_storage(str(path)), "/api/studies")
    assert status.startswith("200") and [s["study_name"] for s in listing["study_summaries"]] == ["sweep-a"]
    study_id = listing["study_summaries"][0]["study_id"]
    status, detail = dashboard_get(get_storage(str(path)), f"/api/studies/{study_id}")
    assert status.startswith("200") and [t["state"] for t in detail["trials"]][:3] == ["Complete", "Complete", "Fail"]
    assert len(detail["trials"]) == len(study.trials)


def test_a_journal_with_other_objectives_is_refused(tmp_path):
    uri = journal_uri(f"file://{tmp_path}/sweeps/sweep-a")
    GroupedOptunaSearch(parse_space(SPACE, storage_uri="file:///tmp"), StudyJournal(uri, "sweep-a"))
    two = SPACE + "objectives:\n  - {metric: sdr, mode: max}\n  - {metric: forgetting/sdr, mode: min}\n"
    with pytest.raises(ValueError, match="other objectives"):
        GroupedOptunaSearch(parse_space(two, storage_uri="file:///tmp"), StudyJournal(uri, "sweep-a"))


class _StopAfterFirstTrial(Callback):
    """Presses Ctrl-C when the first trial ends (Tune stops cleanly; --resume continues)."""

    def on_trial_complete(self, iteration, trials, trial, **info):
        signal.raise_signal(signal.SIGINT)


@pytest.mark.slow
def test_a_real_sweep_keeps_its_study_on_s3_resume_continues_it_and_the_parent_run_holds_the_report(
    services, s3_dataset, tmp_path, capsys
):
    """smoke.yaml, one trial at a time, on the local S3 and MLflow servers: stopped after its first
    trial, the study on S3 holds that trial; --resume adds the second to the same study, which
    optuna.load_study, `contavsep study` and optuna-dashboard's app open; the parent run holds
    the report page and its views."""
    import time

    import ray
    from mlflow import MlflowClient

    from contavsep_platform import cli
    from contavsep_platform.settings import service_env
    from contavsep_platform.spaces import load_space, shipped_spaces_dir
    from contavsep_platform.sweep import connect_ray, run_sweep

    space = load_space(
        shipped_spaces_dir() / "smoke.yaml", storage_uri=services.storage_uri, overrides={"data.uri": s3_dataset}
    )
    space = replace(space, resources=replace(space.resources, max_concurrent=1))  # the second trial waits for the first
    env = service_env(services)
    started = connect_ray(None, env) if not ray.is_initialized() else False
    name = f"study-test-{int(time.time())}"
    kwargs = dict(
        storage_uri=services.storage_uri,
        name=name,
        tracking_uri=services.mlflow_tracking_uri,
        s3=services.s3,
        env=env,
        verbose=0,
    )
    try:
        stopped = run_sweep(space, callbacks=[_StopAfterFirstTrial()], **kwargs)
        assert stopped.interrupted and stopped.max_concurrent == 1
        first = fetch_journal(journal_uri(stopped.sweep_uri), tmp_path / "first", services.s3)
        study = optuna.load_study(
            study_name=name,
            storage=optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(first))),
        )
        done = [t for t in study.trials if t.state == TrialState.COMPLETE]
        assert len(done) == 1 and done[0].params["strategy.name"] == "contavsep"  # the point to evaluate

        resumed = run_sweep(space, resume=True, **kwargs)
    finally:
        if started:
            ray.shutdown()
    assert not resumed.interrupted and len(resumed.trials) == 2

    # `contavsep study NAME` fetches the journal from S3 and prints how to open it.
    assert cli.main(["study", name, "--out", str(tmp_path / "cli")]) == 0
    printed = capsys.readouterr().out
    path = tmp_path / "cli" / JOURNAL_FILE
    assert f"open it with: optuna-dashboard {path}" in printed
    study = optuna.load_study(
        study_name=name, storage=optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    )
    complete = {t.user_attrs["configuration"]: t for t in study.trials if t.state == TrialState.COMPLETE}
    assert done[0].number in {t.number for t in complete.values()}  # the first session's trial, kept
    rows = {r.group: r for r in resumed.trials if r.status == "complete"}
    assert set(complete) == set(rows) and len(rows) == 2
    for group, trial in complete.items():
        assert trial.value == pytest.approx(rows[group].metrics["val/sdr"])  # one repeat: the group mean is its value

    from optuna_dashboard._storage_url import get_storage

    status, listing = dashboard_get(get_storage(str(path)), "/api/studies")
    assert status.startswith("200") and [s["study_name"] for s in listing["study_summaries"]] == [name]

    # The parent run holds the report: the page and the views that apply.
    client = MlflowClient(services.mlflow_tracking_uri)
    artifacts = {a.path for a in client.list_artifacts(resumed.parent_run_id, "report")}
    assert {
        "report/report.html",
        "report/report.md",
        "report/parallel_coordinates.png",
        "report/r_matrices.png",
        "report/step_sdr.png",
    } <= artifacts
    page = client.download_artifacts(resumed.parent_run_id, "report/report.html", str(tmp_path / "page"))
    assert "Hyperparameter importance" in open(page).read()


def test_a_searcher_pickled_before_studies_were_kept_still_resumes(tmp_path):
    """A sweep started before the journal existed: its pickle holds the in-memory study under
    its old name and no journal; the restored searcher continues that study."""
    space = parse_space(SPACE, storage_uri="file:///tmp")
    old = GroupedOptunaSearch(space)
    old.suggest("t0"), old.suggest("t1")
    old.on_trial_complete("t0", _final(2.0))
    state = old.__getstate__()
    state["study"] = state.pop("_study")
    del state["journal"]
    (tmp_path / "old.pkl").write_bytes(pickle.dumps(state))
    restored = GroupedOptunaSearch(space)
    restored.restore(str(tmp_path / "old.pkl"))
    restored.on_trial_complete("t1", _final(4.0))
    assert restored.journal is None and restored.study.trials[0].value == 3.0


def test_the_study_command_refuses_an_unknown_sweep_or_a_bad_name_in_one_line(tmp_path, monkeypatch, capsys):
    from contavsep_platform import cli

    monkeypatch.setenv("CONTAVSEP_HOME", str(tmp_path / "home"))
    for name in ("MLFLOW_TRACKING_URI", "CONTAVSEP_STORAGE", "CONTAVSEP_S3_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    for argv, message in (
        (["study", "nope"], "no Optuna study journal at file://"),
        (["study", "../x"], "is not valid"),
    ):
        assert cli.main([*argv, "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()  # nothing written

    # a file-storage sweep's journal is used in place
    sweep = tmp_path / "home" / "storage" / "sweeps" / "local"
    GroupedOptunaSearch(
        parse_space(SPACE, storage_uri="file:///tmp"), StudyJournal(journal_uri(f"file://{sweep}"), "local")
    )
    assert cli.main(["study", "local", "--out", str(tmp_path / "out")]) == 0
    assert f"open it with: optuna-dashboard {sweep / JOURNAL_FILE}" in capsys.readouterr().out
