"""`contavsep data ingest`: end to end on small MP4s written with PyAV, and its error contract:
one clear line per problem, bad files listed at the end with a non-zero exit, and no manifest
unless the run completed (the output says how to resume)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from contavsep.data.format.manifest import read_manifest
from contavsep.data.ingest.media import write_synthetic_video
from contavsep_platform.cli import main

TINY = ["--extractors", "random-tiny", "--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("videos")
    for c, (name, colour, tone) in enumerate([("violin", (220, 40, 40), 440.0), ("flute", (40, 220, 40), 660.0)]):
        for i in range(2):
            write_synthetic_video(
                root / name / f"{name}{i}.mp4", seconds=2.0 + i, colour=colour, tone_hz=tone, seed=c * 10 + i
            )
    return root


def _ingest(*args: str) -> int:
    return main(["data", "ingest", *args])


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_ingest_random_tiny_to_file(tmp_path: Path, videos: Path, capsys: pytest.CaptureFixture) -> None:
    uri = f"file://{tmp_path}/ds"
    assert _ingest("--layout", "music21", "--root", str(videos), "--out", uri, *TINY) == 0
    out = capsys.readouterr().out
    assert "found 4 video(s) in 2 classes" in out and f"committed {uri}" in out
    manifest = read_manifest(uri)
    assert manifest["classes"] == ["flute", "violin"] and sum(manifest["totals"].values()) == 4
    assert manifest["audio"]["sample_rate"] == 11025
    assert manifest["extractors"]["kind"] == "random-tiny"
    assert manifest["extractors"]["object"]["query_template"] == "a photo of a {}"

    # A second run on a complete dataset refuses to overwrite it, in one line naming the flag.
    assert _ingest("--root", str(videos), "--out", uri, *TINY) == 2
    assert "--overwrite" in _one_error_line(capsys.readouterr().err)
    assert _ingest("--root", str(videos), "--out", uri, "--overwrite", *TINY) == 0


def test_ingest_to_s3_with_env_settings(
    tmp_path: Path,
    videos: Path,
    s3_server,
    s3_bucket: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    uri = f"{s3_bucket}/datasets/music"
    assert _ingest("--root", str(videos), "--out", uri, "--max-seconds", "1.5", *TINY) == 0
    manifest = read_manifest(uri, s3_server.settings)
    assert manifest["audio"]["max_seconds"] == 1.5 and sum(manifest["totals"].values()) == 4
    assert "committed" in capsys.readouterr().out


def test_refused_s3_keys_is_one_line_naming_the_setting(
    tmp_path: Path,
    videos: Path,
    s3_server,
    s3_bucket: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("CONTAVSEP_S3_SECRET_KEY", "wrong-secret")
    assert _ingest("--root", str(videos), "--out", f"{s3_bucket}/ds", *TINY) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "refused the credentials" in line and "CONTAVSEP_S3_SECRET_KEY" in line and "nothing was written" in line


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--root", "{tmp}/nowhere"], "root {tmp}/nowhere does not exist"),
        (["--layout", "vggsound", "--root", "{videos}"], "unknown layout 'vggsound'; supported layouts: music21"),
        (
            ["--root", "{videos}", "--extractors", "tiny"],
            "unknown --extractors 'tiny'; choose one of: pretrained, random-tiny",
        ),
        (["--root", "{videos}", "--splits", "{tmp}/lists.json"], "split list {tmp}/lists.json does not exist"),
        (["--root", "{videos}", "--max-seconds", "0"], "--max-seconds must be > 0"),
        (["--root", "{videos}", "--device", "cuda:99"], "device 'cuda:99' is not available here"),
        (["--root", "{videos}", "--out", "relative/ds"], "'relative/ds' is not a storage URI"),
    ],
)
def test_bad_input_is_one_clear_line(
    tmp_path: Path, videos: Path, capsys: pytest.CaptureFixture, argv: list[str], expected: str
) -> None:
    fill = {"tmp": str(tmp_path), "videos": str(videos)}
    argv = [a.format(**fill) for a in argv]
    assert _ingest(*TINY, "--out", f"file://{tmp_path}/ds", *argv) == 2  # argv last: its flags win
    line = _one_error_line(capsys.readouterr().err)
    assert expected.format(**fill) in line
    assert not (tmp_path / "ds" / "manifest.json").exists()


def test_missing_pretrained_weights_is_one_line_with_the_fix(
    tmp_path: Path, videos: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    code = _ingest(
        "--root",
        str(videos),
        "--out",
        f"file://{tmp_path}/ds",
        "--extractors",
        "pretrained",
        "--offline",
        "--device",
        "cpu",
        "--no-progress",
    )
    assert code == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "google/owlv2-base-patch16-ensemble" in line and "hf download" in line and "HF_HUB_OFFLINE=1" in line


def test_bad_files_are_listed_nothing_committed_then_resume(
    tmp_path: Path, videos: Path, capsys: pytest.CaptureFixture
) -> None:
    root = tmp_path / "root"
    shutil.copytree(videos, root)
    write_synthetic_video(root / "violin" / "mute.mp4", with_audio=False, seconds=1.0)
    (root / "flute" / "corrupt.mp4").write_bytes(b"\x00garbage" * 512)
    shutil.copytree(root / "flute", root / "cello")  # a class folder outside --classes
    (root / "cello" / "corrupt.mp4").unlink()
    uri = f"file://{tmp_path}/ds"
    argv = ["--root", str(root), "--out", uri, "--classes", "violin,flute", "--part-rows", "1", *TINY]

    assert _ingest(*argv) == 1
    captured = capsys.readouterr()
    assert f"{root / 'violin' / 'mute.mp4'}: has no audio track" in captured.err
    assert f"{root / 'flute' / 'corrupt.mp4'}: cannot open as a video file" in captured.err
    assert "class folder 'cello' is not in the class list" in captured.err
    summary = captured.out[captured.out.index("problem(s):") :]
    assert "mute.mp4" in summary and "corrupt.mp4" in summary and "cello" in summary  # listed at the end
    assert "NOT committed" in captured.out and "rerun the same command" in captured.out and "--skip-bad" in captured.out
    assert not (tmp_path / "ds" / "manifest.json").exists()
    assert sorted(p.name for p in (tmp_path / "ds").rglob("*.parquet"))  # the work done so far is kept

    # Remove the bad input; the same command resumes (4 clips already written) and commits.
    (root / "violin" / "mute.mp4").unlink()
    (root / "flute" / "corrupt.mp4").unlink()
    shutil.rmtree(root / "cello")
    assert _ingest(*argv) == 0
    out = capsys.readouterr().out
    assert "resuming: 4 clip(s) already written" in out and "ingested 0 clip(s)" in out
    assert sum(read_manifest(uri)["totals"].values()) == 4


def test_skip_bad_commits_but_exits_non_zero(tmp_path: Path, videos: Path, capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "root"
    shutil.copytree(videos, root)
    write_synthetic_video(root / "violin" / "mute.mp4", with_audio=False, seconds=1.0)
    uri = f"file://{tmp_path}/ds"
    assert _ingest("--root", str(root), "--out", uri, "--skip-bad", *TINY) == 1
    out = capsys.readouterr().out
    assert "1 file(s) left out (--skip-bad)" in out
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert len(manifest["extra"]["skipped_files"]) == 1 and "mute.mp4" in manifest["extra"]["skipped_files"][0]


def test_help_names_the_extractor_defaults(capsys: pytest.CaptureFixture) -> None:
    from contavsep.data.ingest.extractors import PretrainedModelIds

    with pytest.raises(SystemExit) as info:
        _ingest("--help")
    assert info.value.code == 0
    text = "".join(capsys.readouterr().out.split())  # argparse wraps long ids at hyphens
    defaults = PretrainedModelIds()
    for model_id in (defaults.detector, defaults.image, defaults.motion):
        assert model_id in text  # the help repeats the defaults of contavsep.data.ingest.extractors
