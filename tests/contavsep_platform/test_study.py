"""The sweep's persistent Optuna study (an Optuna journal): what optuna.load_study and
optuna-dashboard read, and how a restored searcher continues the same study (no Ray: the
searcher is driven as Tune drives it, pickled and restored as Tune does)."""

from __future__ import annotations

import io
import json
import pickle
from wsgiref.util import setup_testing_defaults

import optuna
import pytest
from optuna.trial import TrialState

from contavsep_platform.search import GroupedOptunaSearch
from contavsep_platform.spaces import GROUP_KEY, parse_space
from contavsep_platform.study import JOURNAL_FILE, StudyJournal, fetch_journal, journal_uri

SPACE = ('name: unit\nbase: {preset: tiny, data.uri: "file:///tmp/none", data.num_steps: 4, data.classes_per_step: 2}\n'
         "strategies:\n  lwf:\n    strategy.lambda_dist: {loguniform: [0.1, 3.0]}\n"
         "num_samples: 4\nrepeats: {seeds: 2}\npoints_to_evaluate:\n  - {strategy.name: lwf, strategy.lambda_dist: 1.0}\n")


def _final(sdr: float, steps: int = 4) -> dict:
    return {"sdr": sdr, "forgetting/sdr": 1.0, "step": float(steps)}


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
