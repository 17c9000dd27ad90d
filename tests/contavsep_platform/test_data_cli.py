"""`contavsep data synth|info`: results, and one clear line with exit 2 for every bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from contavsep import storage
from contavsep_platform.cli import main

TINY = ["--classes", "2", "--clips-per-class", "2,1,1", "--seconds", "1", "--seed", "3"]


def run_cli(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("contavsep data: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_synth_then_info_on_file(tmp_path: Path, capsys) -> None:
    uri = f"file://{tmp_path}/ds"
    code, out, _ = run_cli(capsys, "data", "synth", "--out", uri, *TINY)
    assert code == 0 and f"wrote {uri}: 2 classes, train 4 / val 2 / test 2 clips" in out
    code, out, _ = run_cli(capsys, "data", "info", uri)
    assert code == 0
    assert "content hash" in out and "synthetic-clip-prototype@1 (not pretrained, simulated)" in out
    rows = {line.split()[1]: line.split()[2:] for line in out.splitlines() if line.strip().startswith(("0 ", "1 "))}
    assert rows == {"accordion": ["2", "1", "1"], "bagpipe": ["2", "1", "1"]}
    code, out, _ = run_cli(capsys, "data", "info", uri, "--json")
    assert code == 0 and json.loads(out)["counts"]["train"] == {"accordion": 2, "bagpipe": 2}

    # a complete dataset is not replaced without --overwrite; with it, it is
    code, _, err = run_cli(capsys, "data", "synth", "--out", uri, *TINY)
    assert code == 2 and "already exists" in one_error_line(err) and "--overwrite" in err
    code, out, _ = run_cli(capsys, "data", "synth", "--out", uri, *TINY[:-1], "4", "--overwrite")
    assert code == 0


def test_synth_and_info_on_s3_via_environment(s3_server, s3_bucket: str, capsys, monkeypatch) -> None:
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    uri = storage.join(s3_bucket, "datasets", "tiny")
    code, out, _ = run_cli(capsys, "data", "synth", "--out", uri, *TINY)
    assert code == 0, out
    code, out, _ = run_cli(capsys, "data", "info", uri)
    assert code == 0 and f"dataset      {uri}" in out

    monkeypatch.setenv("CONTAVSEP_S3_SECRET_KEY", "not-the-secret")
    code, _, err = run_cli(capsys, "data", "info", uri)
    line = one_error_line(err)
    assert code == 2 and "refused the credentials" in line and "CONTAVSEP_S3_SECRET_KEY" in line
    code, _, err = run_cli(capsys, "data", "synth", "--out", storage.join(s3_bucket, "other"), *TINY)
    assert code == 2 and "CONTAVSEP_S3_SECRET_KEY" in one_error_line(err)


def test_bad_inputs_are_one_line_and_exit_2(tmp_path: Path, capsys) -> None:
    cases = [
        (["data", "info", "datasets/relative"], "is not a storage URI"),
        (["data", "info", "ftp://host/x"], "unknown URI scheme 'ftp://'"),
        (["data", "info", f"file://{tmp_path}/nothing"], "manifest.json does not exist"),
        (["data", "synth", "--out", f"file://{tmp_path}/x", "--classes", "25"], "21 instruments"),
    ]
    for argv, fragment in cases:
        code, _, err = run_cli(capsys, *argv)
        assert code == 2 and fragment in one_error_line(err), (argv, err)

    # an interrupted build (parts, no manifest) and a foreign schema version are refused, naming the file
    (tmp_path / "partial" / "split=train").mkdir(parents=True)
    (tmp_path / "partial" / "split=train" / "part-00000.parquet").write_bytes(b"PAR1")
    code, _, err = run_cli(capsys, "data", "info", f"file://{tmp_path}/partial")
    assert code == 2 and "incomplete dataset" in one_error_line(err) and "partial/manifest.json is missing" in err
    uri = f"file://{tmp_path}/ds"
    assert run_cli(capsys, "data", "synth", "--out", uri, *TINY)[0] == 0
    manifest = tmp_path / "ds" / "manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "schema_version": 2}))
    code, _, err = run_cli(capsys, "data", "info", uri)
    assert code == 2 and "schema version 2" in one_error_line(err) and "rebuild" in err


def test_console_script_exit_status(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "contavsep"
    done = subprocess.run(
        [str(exe), "data", "info", f"file://{tmp_path}/none"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "manifest.json does not exist" in done.stderr
    help_text = subprocess.run([str(exe), "data", "--help"], capture_output=True, text=True, timeout=120).stdout
    assert "synth" in help_text and "info" in help_text
