"""The bad-input catalogue: every way a user can get a command wrong gets one clear line on
stderr, exit status 2, no traceback, and nothing half-written.

Each case runs the real CLI entry point (``contavsep_platform.cli.main``, what the console script
calls) in this process, from an empty working folder, with its own ``CONTAVSEP_HOME`` where no
services run. After each case: the working folder is still empty (no ``runs/``, ``reports/``,
``config.yaml``), the prepared datasets, checkpoints and sweep records are byte-for-byte as
before (no manifest, no checkpoint, no record written), and no service is recorded as started.
A tracking server is not involved in any case, so no MLflow run can be left RUNNING.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from contavsep_platform.cli import main

REPO = Path(__file__).resolve().parents[2]
SMOKE = str(REPO / "search_spaces" / "smoke.yaml")
# The smoke space on the synthetic 4-class dataset of the fixture.
SMOKE_ON = ["--set", "data.uri={synth}"]
TINY_RUN = [
    "run",
    "--data",
    "{synth}",
    "--preset",
    "tiny",
    "--set",
    "data.num_steps=2",
    "--set",
    "data.classes_per_step=2",
]


@dataclass(frozen=True)
class Case:
    id: str
    argv: list[str]
    expect: str  # a part of the one error line
    env: dict[str, str] = field(default_factory=dict)


CASES = [
    # --- the command line itself (argparse): one line, not the usage block
    Case("no-command", [], "the following arguments are required: COMMAND"),
    Case("unknown-command", ["trian"], "invalid choice: 'trian'"),
    Case("unknown-flag", ["config", "--sett", "a=1"], "unrecognized arguments: --sett"),
    Case("bad-preset-choice", ["config", "--preset", "huge"], "invalid choice: 'huge'"),
    Case("demo-takes-no-arguments", ["demo", "now"], "unrecognized arguments: now"),
    # --- config: keys, types, ranges, files
    Case(
        "unknown-key",
        ["config", "--set", "train.batchsize=8"],
        "unknown config key 'train.batchsize' (did you mean 'train.batch_size'?)",
    ),
    Case("section-as-value", ["config", "--set", "strategy=lwf"], "'strategy' is a section"),
    Case("override-without-value", ["config", "--set", "train.batch_size"], "must look like section.key=value"),
    Case("wrong-type", ["config", "--set", "train.batch_size=eight"], "train.batch_size: expected int, got 'eight'"),
    Case("zero-batch", ["config", "--set", "train.batch_size=0"], "train.batch_size must be >= 1, got 0"),
    Case("zero-eval-batch", ["config", "--set", "eval.batch_size=0"], "eval.batch_size must be >= 1, got 0"),
    Case("zero-lr", ["config", "--set", "train.lr_unet=0"], "train.lr_unet must be > 0, got 0.0"),
    Case("nan-lr", ["config", "--set", "train.lr_transformer=nan"], "train.lr_transformer must be a finite number"),
    Case("negative-memory", ["config", "--set", "memory.per_class=-1"], "memory.per_class must be >= 0, got -1"),
    Case("zero-temperature", ["config", "--set", "strategy.temperature=0"], "strategy.temperature must be > 0"),
    Case(
        "zero-eval-windows", ["config", "--set", "eval.windows_per_clip=0"], "eval.windows_per_clip must be >= 1, got 0"
    ),
    Case("zero-heads", ["config", "--set", "model.n_heads=0"], "model.n_heads must be >= 1, got 0"),
    Case("zero-hop", ["config", "--set", "audio.hop=0"], "audio.hop must be > 0, got 0"),
    Case("zero-steps", ["config", "--set", "data.num_steps=0"], "data.num_steps must be >= 1, got 0"),
    Case("dropout-one", ["config", "--set", "model.dropout=1"], "model.dropout must be < 1"),
    Case(
        "unknown-strategy",
        ["config", "--set", "strategy.name=icarl"],
        "strategy.name: unknown strategy 'icarl'; valid strategies: finetune",
    ),
    Case(
        "missing-config-file",
        ["config", "--config", "{tmp}/nowhere.yaml"],
        "config file {tmp}/nowhere.yaml does not exist",
    ),
    Case(
        "unreadable-yaml",
        ["config", "--config", "{broken_yaml}"],
        "is not valid YAML: line 2, column 11: expected ',' or '}}'",
    ),
    Case("yaml-not-a-mapping", ["config", "--config", "{list_yaml}"], "must hold a mapping of keys, got list"),
    Case("budget-train-clips", ["config", "--budget", "--train-clips", "many"], "--train-clips must be"),
    # --- environment settings
    Case(
        "secret-key-alone",
        ["data", "info", "{ingested}"],
        "CONTAVSEP_S3_SECRET_KEY is set but CONTAVSEP_S3_ACCESS_KEY",
        env={"CONTAVSEP_S3_SECRET_KEY": "s3cr3t"},
    ),
    Case(
        "access-key-alone",
        ["data", "info", "{ingested}"],
        "AWS_ACCESS_KEY_ID is set but CONTAVSEP_S3_SECRET_KEY",
        env={"AWS_ACCESS_KEY_ID": "AKIA"},
    ),
    Case(
        "storage-not-a-uri",
        ["data", "info", "{ingested}"],
        "is not a storage URI",
        env={"CONTAVSEP_STORAGE": "results/here"},
    ),
    Case(
        "s3-endpoint-scheme",
        ["data", "info", "{ingested}"],
        "must look like http://host:port",
        env={"CONTAVSEP_S3_ENDPOINT": "ftp://store:21"},
    ),
    Case("state-file-unreadable", ["services", "status"], "is unreadable", env={"@state": "{not json"}),
    # --- data synth / info / ingest
    Case("synth-relative-out", ["data", "synth", "--out", "datasets/x"], "'datasets/x' is not a storage URI"),
    Case("synth-too-many-classes", ["data", "synth", "--out", "file://{tmp}/new", "--classes", "30"], "--classes 30"),
    Case(
        "synth-two-counts",
        ["data", "synth", "--out", "file://{tmp}/new", "--clips-per-class", "2,1"],
        "expected three integers",
    ),
    Case(
        "synth-zero-workers", ["data", "synth", "--out", "file://{tmp}/new", "--workers", "0"], "--workers must be >= 1"
    ),
    Case("synth-zero-seconds", ["data", "synth", "--out", "file://{tmp}/new", "--seconds", "0"], "--seconds"),
    Case(
        "synth-under-a-file", ["data", "synth", "--out", "file:///etc/hostname/ds", "--classes", "1"], "Not a directory"
    ),
    Case("synth-over-complete", ["data", "synth", "--out", "{synth}", "--classes", "4"], "--overwrite"),
    Case("info-missing-dataset", ["data", "info", "file://{tmp}/nothing"], "no dataset"),
    Case("info-bad-bucket", ["data", "info", "s3://Bad_Bucket/x"], "Bad_Bucket"),
    Case("info-http-uri", ["data", "info", "https://example.org/ds"], "unknown URI scheme 'https://'"),
    Case("info-a-file", ["data", "info", "file:///etc/hostname"], "that is a file; a dataset URI names the folder"),
    Case(
        "synth-negative-seed",
        ["data", "synth", "--out", "file://{tmp}/new", "--seed", "-1"],
        "--seed must be >= 0, got -1",
    ),
    Case("info-broken-manifest", ["data", "info", "{broken_manifest}"], "manifest"),
    Case(
        "ingest-no-root",
        ["data", "ingest", "--root", "{tmp}/nowhere", "--out", "file://{tmp}/new", "--extractors", "random-tiny"],
        "does not exist",
    ),
    Case(
        "ingest-zero-part-rows",
        ["data", "ingest", "--root", "{videos}", "--out", "file://{tmp}/new", "--part-rows", "0"],
        "--part-rows must be > 0",
    ),
    Case(
        "ingest-template",
        ["data", "ingest", "--root", "{videos}", "--out", "file://{tmp}/new", "--query-template", "violin"],
        "--query-template must contain {{}}",
    ),
    Case(
        "ingest-ratios",
        ["data", "ingest", "--root", "{videos}", "--out", "file://{tmp}/new", "--split-ratios", "1,2"],
        "must be three non-negative numbers",
    ),
    Case(
        "ingest-model-without-pretrained",
        [
            "data",
            "ingest",
            "--root",
            "{videos}",
            "--out",
            "file://{tmp}/new",
            "--extractors",
            "random-tiny",
            "--image-model",
            "{tmp}",
        ],
        "--image-model only applies to --extractors pretrained",
    ),
    # The machine is offline (the Hub endpoint refuses connections) and the cache is empty: the
    # pre-download line comes in seconds, not after ~90 s of Hub retries.
    Case(
        "ingest-offline-pretrained",
        ["data", "ingest", "--root", "{videos}", "--out", "file://{tmp}/new", "--device", "cpu", "--no-progress"],
        "hf download google/owlv2-base-patch16-ensemble",
        env={"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": "{hf}", "HF_HUB_CACHE": "{hf}/hub"},
    ),
    # --- run
    Case("run-relative-data", ["run", "--data", "data/x"], "'data/x' is not a storage URI"),
    Case("run-missing-data", ["run", "--data", "file://{tmp}/nothing", "--preset", "tiny"], "no dataset"),
    Case("run-zero-batch", [*TINY_RUN, "--set", "train.batch_size=0"], "train.batch_size must be >= 1"),
    Case("run-unknown-strategy", [*TINY_RUN, "--strategy", "icarl"], "strategy.name:"),
    Case("run-no-cuda", [*TINY_RUN, "--set", "train.device=cuda:7"], "train.device=cuda:7"),
    Case(
        "run-sample-rate",
        [*TINY_RUN, "--set", "audio.sample_rate=16000"],
        "has audio at 11025 Hz but audio.sample_rate=16000",
    ),
    Case("run-too-few-classes", ["run", "--data", "{synth}", "--preset", "tiny"], "classes"),
    Case("run-resume-not-a-checkpoint", [*TINY_RUN, "--resume", "{tmp}"], "is not a contavsep checkpoint"),
    Case(
        "run-resume-other-config",
        [*TINY_RUN, "--resume", "{ckpt_other_config}"],
        "was written with another config: strategy.lambda_ins: 0.5 -> 0.1",
    ),
    Case(
        "run-resume-other-dataset",
        [*TINY_RUN, "--resume", "{ckpt_other_data}"],
        "was trained on dataset content 0000000000000000",
    ),
    Case(
        "run-out-under-a-file",
        [*TINY_RUN, "--out", "/etc/hostname/run"],
        "--out /etc/hostname/run: /etc/hostname is not a writable folder",
    ),
    Case("run-out-holds-a-run", [*TINY_RUN, "--out", "{finished_run}"], "already holds a run (results.json)"),
    Case(
        "run-damaged-part",
        [
            "run",
            "--data",
            "{damaged}",
            "--preset",
            "tiny",
            "--set",
            "data.num_steps=2",
            "--set",
            "data.classes_per_step=2",
        ],
        "its manifest records",
    ),
    # --- sweep
    Case("sweep-missing-space", ["sweep", "{tmp}/nowhere.yaml"], "search space {tmp}/nowhere.yaml does not exist"),
    Case("sweep-unreadable-space", ["sweep", "{broken_yaml}"], "YAML"),
    Case("sweep-space-unknown-key", ["sweep", "{space_typo}", "--check"], "num_sample"),
    Case("sweep-space-zero-samples", ["sweep", "{space_zero}", "--check"], "num_samples must be >= 1, got 0"),
    Case(
        "sweep-zero-samples-flag",
        ["sweep", SMOKE, *SMOKE_ON, "--num-samples", "0", "--check"],
        "--num-samples must be >= 1, got 0",
    ),
    Case(
        "sweep-zero-batch-check",
        ["sweep", SMOKE, *SMOKE_ON, "--set", "train.batch_size=0", "--check"],
        "train.batch_size must be >= 1",
    ),
    Case(
        "sweep-unknown-set-key",
        ["sweep", SMOKE, *SMOKE_ON, "--set", "train.lr=0.1", "--check"],
        "unknown config key 'train.lr'",
    ),
    Case(
        "sweep-key-of-another-strategy",
        ["sweep", SMOKE, *SMOKE_ON, "--set", "strategy.temperature=0.1", "--check"],
        "strategies.finetune: strategy 'finetune' has no key 'strategy.temperature' (a key of avcil, contavsep)",
    ),
    Case(
        "sweep-name-with-slash", ["sweep", SMOKE, *SMOKE_ON, "--name", "bad/name"], "sweep name 'bad/name' is not valid"
    ),
    Case("sweep-name-dot", ["sweep", SMOKE, *SMOKE_ON, "--name", ".hidden"], "sweep name '.hidden' is not valid"),
    Case("sweep-name-too-long", ["sweep", SMOKE, *SMOKE_ON, "--name", "x" * 101], "is not valid"),
    Case("sweep-resume-without-name", ["sweep", SMOKE, *SMOKE_ON, "--resume"], "--resume needs the --name"),
    Case(
        "sweep-resume-num-samples",
        ["sweep", SMOKE, *SMOKE_ON, "--resume", "--name", "s", "--num-samples", "3"],
        "--num-samples cannot change a sweep being resumed",
    ),
    Case("sweep-missing-dataset", ["sweep", SMOKE, "--set", "data.uri=file://{tmp}/nothing"], "no dataset"),
    Case(
        "sweep-resume-other-space",
        ["sweep", SMOKE, *SMOKE_ON, "--set", "train.iters_per_step=5", "--resume", "--name", "recorded"],
        "--resume with another space than sweep 'recorded' was started with: base.train.iters_per_step: 3 -> 5",
    ),
    Case(
        "sweep-relative-data-uri",
        ["sweep", SMOKE, "--set", "data.uri=datasets/x", "--check"],
        "data.uri: 'datasets/x' is not a storage URI",
    ),
    Case(
        "sweep-cuda-without-gpus",
        ["sweep", SMOKE, *SMOKE_ON, "--set", "train.device=cuda", "--check"],
        "train.device=cuda but resources.gpus is 0",
    ),
    # --- services
    Case("services-unknown-action", ["services", "restart"], "unknown services command 'restart'"),
    Case("services-port-range", ["services", "up", "--s3-port", "70000"], "--s3-port 70000 is not a TCP port"),
    Case(
        "services-flag-not-for-status", ["services", "status", "--ray"], "--ray only applies to `contavsep services up`"
    ),
    Case("services-zero-cpus", ["services", "up", "--ray", "--num-cpus", "0"], "--num-cpus 0 must be at least 1"),
    Case("services-ray-port-without-ray", ["services", "up", "--ray-port", "7001"], "is a Ray head port: add --ray"),
    Case(
        "services-same-port-twice",
        ["services", "up", "--s3-port", "{port}", "--mlflow-port", "{port}"],
        "--s3-port and --mlflow-port are both {port}",
    ),
    Case(
        "services-ray-worker-range",
        ["services", "up", "--ray", "--ray-port", "15000"],
        "inside Ray's worker-port range 10002-19999",
    ),
    Case(
        "services-port-in-use",
        ["services", "up", "--s3-port", "{busy_port}"],
        "port {busy_port} for s3 (--s3-port) is in use",
    ),
    # --- report
    Case("report-no-tracking", ["report", "--sweep", "smoke-1"], "no MLflow tracking server configured"),
    Case(
        "report-unreachable",
        ["report", "--sweep", "smoke-1", "--tracking-uri", "http://127.0.0.1:9"],
        "MLflow at http://127.0.0.1:9 is unreachable",
    ),
    Case(
        "report-not-a-tracking-uri",
        ["report", "--sweep", "smoke-1", "--tracking-uri", "mlruns"],
        "--tracking-uri 'mlruns' is not an MLflow tracking server or database",
    ),
    Case(
        "sweep-not-a-tracking-uri",
        ["sweep", SMOKE, *SMOKE_ON],
        "MLFLOW_TRACKING_URI './mlruns' is not an MLflow tracking server",
        env={"MLFLOW_TRACKING_URI": "./mlruns"},
    ),
    Case(
        "report-missing-database",
        ["report", "--sweep", "smoke-1", "--tracking-uri", "sqlite:///{tmp}/mlflow.db"],
        "no MLflow database at {tmp}/mlflow.db",
    ),
]

# Cases against the real local S3 and MLflow servers (the session's `services`): nothing may
# appear in the bucket and no MLflow run may be left RUNNING.
SERVICE_CASES = [
    Case("report-unknown-sweep", ["report", "--sweep", "no-such-sweep"], "no sweep named 'no-such-sweep'"),
    Case(
        "sweep-missing-s3-dataset",
        ["sweep", SMOKE, "--set", "data.uri=s3://contavsep/datasets/not-there"],
        "no dataset",
    ),
    Case(
        "run-missing-s3-dataset",
        ["run", "--data", "s3://contavsep/datasets/not-there", "--preset", "tiny"],
        "no dataset",
    ),
    Case(
        "sweep-resume-other-space-s3",
        [
            "sweep",
            SMOKE,
            "--set",
            "data.uri={s3_dataset}",
            "--set",
            "train.iters_per_step=4",
            "--resume",
            "--name",
            "recorded-s3",
        ],
        "--resume with another space than sweep 'recorded-s3' was started with: base.train.iters_per_step: 3 -> 4",
    ),
    Case(
        "synth-s3-bad-classes",
        ["data", "synth", "--out", "s3://contavsep/datasets/new", "--classes", "0"],
        "--classes 0",
    ),
    Case(
        "wrong-secret-key",
        ["data", "info", "{s3_dataset}"],
        "refused the credentials",
        env={"@s3": "CONTAVSEP_S3_SECRET_KEY=wrong"},
    ),
]


@pytest.fixture(scope="module")
def world(
    platform_home: Path, synth_dataset_factory: Callable[..., str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """Everything the cases point at, prepared once: datasets (synthetic, ingested, damaged),
    checkpoints, a recorded sweep, broken files, a busy port."""
    from contavsep import storage
    from contavsep.checkpoint import TrainingState, save_checkpoint
    from contavsep.config import make_config
    from contavsep.data.format.manifest import read_manifest
    from contavsep.data.format.reader import open_dataset
    from contavsep.data.ingest.media import write_synthetic_video
    from contavsep_platform.spaces import load_space
    from contavsep_platform.sweep import SPACE_RECORD, space_record

    root = tmp_path_factory.mktemp("bad-inputs")
    home, cache = root / "home", root / "cache"
    home.mkdir()
    synth = synth_dataset_factory(classes=4, clips_per_class=(2, 1, 1), seconds=1.6)
    videos = root / "videos"
    for name, colour, tone in [("violin", (220, 40, 40), 440.0), ("flute", (40, 220, 40), 660.0)]:
        write_synthetic_video(videos / name / f"{name}0.mp4", seconds=2.0, colour=colour, tone_hz=tone, seed=0)
    ingested = f"file://{root}/ingested"
    assert (
        main(
            [
                "data",
                "ingest",
                "--root",
                str(videos),
                "--out",
                ingested,
                "--extractors",
                "random-tiny",
                "--device",
                "cpu",
                "--no-progress",
            ]
        )
        == 0
    )
    # A copy of the synthetic dataset whose node cache exists, then one Parquet part is damaged.
    damaged_dir = root / "damaged"
    shutil.copytree(synth.removeprefix("file://"), damaged_dir)
    open_dataset(f"file://{damaged_dir}", cache_dir=cache)
    part = sorted(damaged_dir.glob("**/*.parquet"))[0]
    part.write_bytes(part.read_bytes()[:-100])
    broken_manifest = root / "broken-manifest"
    shutil.copytree(synth.removeprefix("file://"), broken_manifest)
    (broken_manifest / "manifest.json").write_text('{"schema_version": 1, "classes": [')

    content_hash = read_manifest(synth)["content_hash"]
    run_cfg = make_config("tiny", {"data.uri": synth, "data.num_steps": 2, "data.classes_per_step": 2})

    def checkpoint(name: str, cfg, data_hash: str) -> str:
        state = TrainingState(
            step=0,
            config=cfg,
            model={},
            num_classes=2,
            optimizers=[],
            schedulers=[],
            strategy={},
            memory={},
            results={},
            rng={},
            data_content_hash=data_hash,
        )
        return str(save_checkpoint(state, root / name / "step=0"))

    # A sweep 'recorded' started with the smoke space on the synthetic dataset (its record only:
    # the check runs before Tune's state is read).
    space = load_space(SMOKE, storage_uri=f"file://{home}/storage", overrides={"data.uri": synth})
    record_uri = storage.join(f"file://{home}/storage", "sweeps", "recorded", SPACE_RECORD)
    storage.write_bytes_atomic(record_uri, json.dumps(space_record(space, read_manifest(synth))).encode())

    (root / "finished-run").mkdir()
    (root / "finished-run" / "results.json").write_text('{"complete": true}')
    (root / "broken.yaml").write_text("base: {preset: tiny\nstrategies: [")
    (root / "list.yaml").write_text("- train.batch_size: 8\n")
    (root / "typo.yaml").write_text(Path(SMOKE).read_text().replace("num_samples:", "num_sample:"))
    (root / "zero.yaml").write_text(Path(SMOKE).read_text().replace("num_samples: 2", "num_samples: 0"))
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        yield {
            "root": str(root),
            "home": str(home),
            "cache": str(cache),
            "synth": synth,
            "ingested": ingested,
            "videos": str(videos),
            "damaged": f"file://{damaged_dir}",
            "broken_manifest": f"file://{broken_manifest}",
            "ckpt_other_config": checkpoint(
                "other-config",
                make_config("tiny", {**_flat_overrides(run_cfg), "strategy.lambda_ins": 0.5}),
                content_hash,
            ),
            "ckpt_other_data": checkpoint("other-data", run_cfg, "0" * 64),
            "broken_yaml": str(root / "broken.yaml"),
            "list_yaml": str(root / "list.yaml"),
            "space_typo": str(root / "typo.yaml"),
            "space_zero": str(root / "zero.yaml"),
            "finished_run": str(root / "finished-run"),
            "port": str(port),
            "busy_port": str(busy.getsockname()[1]),
        }


def _flat_overrides(cfg) -> dict:
    from contavsep.config import flat

    return {k: v for k, v in flat(cfg).items() if k != "preset"}


def _snapshot(root: Path, skip: tuple[Path, ...]) -> dict[str, tuple[int, int]]:
    out = {}
    for dirpath, _, files in os.walk(root):
        if any(Path(dirpath).is_relative_to(s) for s in skip):
            continue
        for name in files:
            path = Path(dirpath) / name
            stat = path.stat()
            out[str(path.relative_to(root))] = (stat.st_size, stat.st_mtime_ns)
    return out


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_exit_2_nothing_written(
    case: Case, world: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from contavsep_platform.settings import STATE_FILE, read_state

    fill = {**world, "tmp": str(tmp_path / "scratch"), "hf": str(tmp_path / "hf")}
    (tmp_path / "scratch").mkdir()
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    home = Path(world["home"])
    monkeypatch.setenv("CONTAVSEP_HOME", str(home))
    monkeypatch.setenv("CONTAVSEP_CACHE_DIR", world["cache"])
    state_file = home / STATE_FILE
    for key, value in case.env.items():
        if key == "@state":
            state_file.write_text(value)
        else:
            monkeypatch.setenv(key, value.format(**fill))
    root, cache = Path(world["root"]), Path(world["cache"])
    # The home's keys and logs may appear (a `services up` refused for a busy port prepares them);
    # its storage (the recorded sweep) may not change.
    watched = lambda: (_snapshot(root, skip=(cache, home)), _snapshot(home / "storage", skip=()))  # noqa: E731
    before = watched()
    try:
        code = main([a.format(**fill) for a in case.argv])
    except SystemExit as exc:  # argparse
        code = exc.code
    finally:
        if "@state" in case.env:
            state_file.unlink()
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    assert code == 2, err
    assert case.expect.format(**fill) in lines[0]
    assert lines[0].startswith("contavsep")
    assert list(cwd.iterdir()) == [], "something was written to the working folder"
    assert not any((tmp_path / "scratch").iterdir()), "something was written next to the named paths"
    assert watched() == before, "a prepared file was changed"
    if state_file.exists():
        assert read_state(home).services == {}, "a refused `services up` left a service recorded"
    if case.argv[:2] == ["services", "up"]:  # and no server took the port it was given
        from contavsep_platform.services import _port_free

        assert _port_free(int(world["port"])), "a refused `services up` left a server running"


@pytest.fixture(scope="module")
def s3_world(services, platform_home: Path, synth_dataset_factory: Callable[..., str]) -> dict[str, str]:
    """A small dataset on the services' S3 and a sweep 'recorded-s3' started on it (its record)."""
    from contavsep import storage
    from contavsep.data.format.manifest import read_manifest
    from contavsep.data.synthetic.synth import SynthConfig, build_synthetic
    from contavsep_platform.spaces import load_space
    from contavsep_platform.sweep import SPACE_RECORD, space_record

    uri = storage.join(services.storage_uri, "datasets", "synth-bad-inputs")
    storage.ensure_bucket(services.storage_uri, services.s3)
    if not storage.exists(storage.join(uri, "manifest.json"), services.s3):
        build_synthetic(uri, SynthConfig(classes=4, clips_per_class=(2, 1, 1), seconds=1.6), settings=services.s3)
    space = load_space(SMOKE, storage_uri=services.storage_uri, overrides={"data.uri": uri})
    record = json.dumps(space_record(space, read_manifest(uri, services.s3))).encode()
    storage.write_bytes_atomic(
        storage.join(services.storage_uri, "sweeps", "recorded-s3", SPACE_RECORD), record, services.s3
    )
    return {"s3_dataset": uri}


def _running_runs(tracking_uri: str) -> set[str]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    return (
        {r.info.run_id for r in client.search_runs(ids, "attributes.status = 'RUNNING'", max_results=1000)}
        if ids
        else set()
    )


@pytest.mark.parametrize("case", SERVICE_CASES, ids=[c.id for c in SERVICE_CASES])
def test_bad_input_with_services_writes_nothing_and_leaves_no_run(
    case: Case,
    services,
    s3_world: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    from contavsep import storage
    from contavsep_platform.settings import service_env

    monkeypatch.chdir(tmp_path)
    fill = {**s3_world, "tmp": str(tmp_path)}
    for key, value in case.env.items():
        if key == "@s3":  # the services' own settings, one of them changed
            for name, env_value in service_env(services).items():
                monkeypatch.setenv(name, env_value)
            # service_env names the keys file, never the keys: a changed key comes as an
            # explicit pair, the other one right
            monkeypatch.setenv("CONTAVSEP_S3_ACCESS_KEY", services.s3.access_key)
            monkeypatch.setenv("CONTAVSEP_S3_SECRET_KEY", services.s3.secret_key)
            name, _, env_value = value.partition("=")
            monkeypatch.setenv(name, env_value)
    bucket = storage.parse_uri(services.storage_uri)
    objects = lambda: storage.list_dir(f"s3://{bucket.bucket}", services.s3, recursive=True)  # noqa: E731
    before_objects, before_runs = objects(), _running_runs(services.mlflow_tracking_uri)
    code = main([a.format(**fill) for a in case.argv])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and len(lines) == 1 and code == 2, err
    assert case.expect.format(**fill) in lines[0]
    assert list(tmp_path.iterdir()) == []
    assert objects() == before_objects, "the refused command wrote to the bucket"
    assert _running_runs(services.mlflow_tracking_uri) == before_runs, "the refused command left an MLflow run RUNNING"


def test_catalogue_is_large_enough() -> None:
    cases = CASES + SERVICE_CASES
    assert len(cases) >= 40 and len({c.id for c in cases}) == len(cases)


def test_data_info_reads_an_ingested_dataset(world: dict[str, str], capsys: pytest.CaptureFixture) -> None:
    """The manifest of `data ingest` records the extractor kind next to the models (it crashed `info`)."""
    assert main(["data", "info", world["ingested"]]) == 0
    out = capsys.readouterr().out
    assert (
        "extractors   kind: random-tiny; object: random-tiny/clip-vision" in out and "crops by random-tiny/owlv2" in out
    )


def test_closed_pipe_exits_quietly(tmp_path: Path) -> None:
    """`contavsep config --keys | true`: the reader is gone before the output; no traceback."""
    env = {
        **os.environ,
        "CONTAVSEP_HOME": str(tmp_path),
        "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "platform")]),
    }
    reader = subprocess.Popen(["true"], stdin=subprocess.PIPE)
    reader.wait()
    proc = subprocess.run(
        [sys.executable, "-m", "contavsep_platform.cli", "config", "--keys"],
        stdout=reader.stdin,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        timeout=120,
    )
    reader.stdin.close()
    assert proc.stderr == "" and proc.returncode == 141


def test_resume_accepts_the_same_dataset_elsewhere_and_names_keys(tmp_path: Path) -> None:
    """data.uri is where the data lives: a checkpoint resumes against a copy at another URI;
    another content hash, or any other key, is refused naming it."""
    from contavsep.checkpoint import CheckpointError, TrainingState, check_resumable
    from contavsep.config import make_config

    cfg = make_config("tiny", {"data.uri": "file:///a/ds"})
    state = TrainingState(
        step=0,
        config=cfg,
        model={},
        num_classes=2,
        optimizers=[],
        schedulers=[],
        strategy={},
        memory={},
        results={},
        rng={},
        data_content_hash="ab" * 32,
    )
    check_resumable(state, make_config("tiny", {"data.uri": "s3://bucket/copy"}), "ab" * 32, tmp_path)
    with pytest.raises(CheckpointError, match="trained on dataset content abab"):
        check_resumable(state, make_config("tiny", {"data.uri": "s3://bucket/copy"}), "cd" * 32, tmp_path)
    with pytest.raises(CheckpointError, match=r"train.batch_size: 8 -> 4; train.seed: 0 -> 3"):
        check_resumable(
            state,
            make_config("tiny", {"data.uri": "file:///a/ds", "train.batch_size": 4, "train.seed": 3}),
            "ab" * 32,
            tmp_path,
        )
