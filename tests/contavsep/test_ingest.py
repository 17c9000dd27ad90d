"""Ingestion of MUSIC-21-style videos: PyAV decoding, split lists, extractors, the pipeline.

The videos are written by the tests with PyAV (H.264 + AAC): a coloured square moving over a
dark background with a harmonic tone, a few seconds each, in ``<class>/<clip>.mp4``. Extractors are
the real OWLv2 / CLIP / VideoMAE classes with tiny random weights (no downloads here).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from contavsep.data.format.manifest import DatasetError, read_manifest
from contavsep.data.format.reader import open_dataset
from contavsep.data.ingest.extractors import (
    MOTION_DIM,
    MOTION_TOKENS,
    OBJECT_DIM,
    ExtractorLoadError,
    PretrainedModelIds,
    build_random_tiny_extractors,
    centre_crop_resize,
    crop_boxes,
    load_pretrained_extractors,
)
from contavsep.data.ingest.media import (
    MediaError,
    audio_to_int16,
    decode_clip,
    object_frame_times,
    write_synthetic_video,
)
from contavsep.data.ingest.pipeline import (
    IngestError,
    IngestSettings,
    discover,
    ingest,
    open_writer,
)
from contavsep.data.ingest.splits import (
    SplitListError,
    assign_splits,
    load_split_lists,
    music21_contavsep_splits,
    parse_split_lists,
)

CLASSES = {  # class -> (colour, fundamental Hz)
    "violin": ((220, 40, 40), 440.0),
    "flute": ((40, 220, 40), 660.0),
    "acoustic_guitar": ((40, 40, 220), 330.0),
}
SECONDS = (2.4, 3.6)  # two clips per class of these lengths


@pytest.fixture(scope="module")
def video_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("music21")
    for c, (name, (colour, tone)) in enumerate(CLASSES.items()):
        for i, seconds in enumerate(SECONDS):
            write_synthetic_video(
                root / name / f"{name[:3]}{i}.mp4", seconds=seconds, colour=colour, tone_hz=tone, seed=10 * c + i
            )
    return root


@pytest.fixture(scope="module")
def tiny() -> object:
    return build_random_tiny_extractors(device="cpu", seed=0)


def _copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# ------------------------------------------------------------------------------------------------
# media


def test_decode_clip_audio_rate_pitch_and_frames(video_root: Path) -> None:
    clip = decode_clip(video_root / "violin" / "vio1.mp4")
    assert clip.sample_rate == 11025
    # Whole track: 3.6 s, plus at most one AAC frame of encoder padding (1024 samples at 22050 Hz).
    assert 3.6 * 11025 - 50 <= clip.audio.shape[0] <= 3.6 * 11025 + 600
    spectrum = np.abs(np.fft.rfft(clip.audio * np.hanning(clip.audio.size)))
    peak_hz = np.argmax(spectrum) * 11025 / clip.audio.size
    assert abs(peak_hz - 440.0) < 5.0  # the fundamental survives decoding + mono + resampling
    np.testing.assert_allclose(clip.frame_times, [0.5, 1.5, 2.5, 3.5])
    assert clip.frames.shape == (4, 96, 128, 3) and clip.frames.dtype == np.uint8
    assert clip.motion_frames.shape == (16, 96, 128, 3)
    # The violin square is red: the reddest pixels of a frame are close to (220, 40, 40).
    frame = clip.frames[0].astype(int)
    red = frame[(frame[..., 0] > 150)]
    assert len(red) > 100 and np.abs(red.mean(axis=0) - [220, 40, 40]).max() < 25
    # The square moves: the first and last motion frames differ.
    assert np.abs(clip.motion_frames[0].astype(int) - clip.motion_frames[-1].astype(int)).mean() > 1.0


def test_decode_clip_max_seconds_and_downscale(video_root: Path) -> None:
    clip = decode_clip(video_root / "flute" / "flu1.mp4", max_seconds=1.5, max_side=64)
    assert abs(clip.audio.shape[0] - 1.5 * 11025) <= 1
    np.testing.assert_allclose(clip.frame_times, [0.5, 1.5])  # round(1.5 s * 1 fps) = 2 windows
    assert len(clip.frames) == 2 and clip.duration == 1.5
    assert clip.frames.shape[1:] == (48, 64, 3)


def test_object_frame_times_windows() -> None:
    np.testing.assert_allclose(object_frame_times(3.4, 1.0), [0.5, 1.5, 2.5])
    np.testing.assert_allclose(object_frame_times(3.6, 1.0), [0.5, 1.5, 2.5, 3.5])
    np.testing.assert_allclose(object_frame_times(0.4, 1.0), [0.2])  # shorter than a window: its middle
    np.testing.assert_allclose(object_frame_times(2.0, 2.0), [0.25, 0.75, 1.25, 1.75])


def test_audio_to_int16_clips_instead_of_wrapping() -> None:
    out = audio_to_int16(np.array([0.0, 0.5, 1.0, 1.7, -1.7], np.float32))
    assert out.dtype == np.int16
    assert out.tolist() == [0, 16384, 32767, 32767, -32767]


def test_decode_errors_name_the_file(tmp_path: Path) -> None:
    silent = write_synthetic_video(tmp_path / "silent.mp4", with_audio=False, seconds=1.0)
    with pytest.raises(MediaError, match=r"silent\.mp4: has no audio track"):
        decode_clip(silent)
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00not a video" * 200)
    with pytest.raises(MediaError, match=r"corrupt\.mp4: cannot open as a video file"):
        decode_clip(corrupt)
    good = write_synthetic_video(tmp_path / "good.mp4", seconds=1.0)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    with pytest.raises(MediaError, match=r"truncated\.mp4"):
        decode_clip(truncated)


# ------------------------------------------------------------------------------------------------
# splits


def test_packaged_music21_lists_match_the_paper() -> None:
    lists = music21_contavsep_splits()
    assert len(lists.class_order) == 20 and lists.class_order[:3] == ("accordion", "bagpipe", "bassoon")
    assert lists.counts() == {"train": 840, "val": 100, "test": 100}
    assert "congas" in lists.listed_classes() and "congas" not in lists.class_order
    assert lists.split_of("piano", "Amk7Ssb5EHo") == "train"
    assert lists.split_of("violin", "Amk7Ssb5EHo") is None
    assert load_split_lists("music21-contavsep").counts() == lists.counts()


def test_split_list_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(SplitListError, match="does not exist"):
        load_split_lists(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SplitListError, match=r"bad\.json is not valid JSON"):
        load_split_lists(bad)
    with pytest.raises(SplitListError, match="listed in both 'train' and 'test'"):
        parse_split_lists({"splits": {"train": {"a": ["x"]}, "test": {"a": ["x"]}}}, "lists.json")
    with pytest.raises(SplitListError, match=r"unknown split name\(s\) \['dev'\]"):
        parse_split_lists({"splits": {"dev": {"a": ["x"]}}}, "lists.json")
    with pytest.raises(SplitListError, match="no listed clips"):
        parse_split_lists({"class_order": ["a", "b"], "splits": {"train": {"a": ["x"]}}}, "lists.json")


def test_assign_splits_is_deterministic_and_covers_test() -> None:
    ids = {"a": [f"a{i}" for i in range(20)], "b": ["b0", "b1", "b2"], "c": ["c0", "c1"], "d": ["d0"]}
    first = assign_splits(ids, (0.8, 0.1, 0.1), seed=3)
    assert first == assign_splits(ids, (0.8, 0.1, 0.1), seed=3)
    count = lambda cls, split: sum(1 for (c, _), s in first.items() if c == cls and s == split)  # noqa: E731
    assert (count("a", "train"), count("a", "val"), count("a", "test")) == (16, 2, 2)
    assert (count("b", "train"), count("b", "val"), count("b", "test")) == (1, 1, 1)
    assert (count("c", "train"), count("c", "test")) == (1, 1)
    assert first[("d", "d0")] == "train"
    assert assign_splits(ids, (0.8, 0.1, 0.1), seed=4) != first
    # Removing one clip moves at most the clips next to a cut (hash order, not a reshuffle).
    fewer = assign_splits({"a": ids["a"][1:]}, (0.8, 0.1, 0.1), seed=3)
    moved = sum(1 for (c, i), s in fewer.items() if first[(c, i)] != s)
    assert moved <= 2


# ------------------------------------------------------------------------------------------------
# discovery


def test_discover_ratio_splits_and_class_order(video_root: Path) -> None:
    found = discover("music21", video_root)
    assert found.classes == ("acoustic_guitar", "flute", "violin")
    assert len(found.items) == 6 and not found.problems
    assert {i.class_name for i in found.items} == set(CLASSES)
    assert all(i.path.suffix == ".mp4" and i.clip_id == i.path.stem for i in found.items)
    # Two clips per class: one goes to test (evaluation needs every class), one to train.
    assert sorted(i.split for i in found.items) == ["test"] * 3 + ["train"] * 3


def test_discover_reports_bad_input(tmp_path: Path, video_root: Path) -> None:
    with pytest.raises(IngestError, match=r"root .*missing does not exist"):
        discover("music21", tmp_path / "missing")
    with pytest.raises(IngestError, match=r"unknown layout 'music-21' \(did you mean 'music21'\?\)"):
        discover("music-21", video_root)
    empty = tmp_path / "empty"
    (empty / "violin").mkdir(parents=True)
    with pytest.raises(IngestError, match="no videos under"):
        discover("music21", empty)

    root = _copy_tree(video_root, tmp_path / "root")
    shutil.copy(root / "flute" / "flu0.mp4", root / "violin" / "flu0.mp4")  # same clip id in two classes
    (root / "violin" / "notes.txt").write_text("not a video")
    found = discover("music21", root, classes=["violin", "flute", "cello"])
    reasons = [str(p) for p in found.problems]
    assert any("acoustic_guitar: class folder 'acoustic_guitar' is not in the class list" in r for r in reasons)
    assert any("class 'cello' of the class list has no videos" in r for r in reasons)
    assert any("duplicate clip id 'flu0'" in r for r in reasons)
    assert any("ignored 1 non-video file" in n for n in found.notes)
    assert {i.class_name for i in found.items} == {"violin", "flute"}


def test_discover_with_split_lists(tmp_path: Path, video_root: Path) -> None:
    root = _copy_tree(video_root, tmp_path / "root")
    shutil.copytree(root / "flute", root / "congas")
    lists = parse_split_lists(
        {
            "class_order": ["violin", "flute", "acoustic_guitar"],
            "splits": {
                "train": {"violin": ["vio0"], "flute": ["flu0"], "acoustic_guitar": ["aco0"], "congas": ["flu0"]},
                "val": {"violin": ["gone"]},
                "test": {"violin": ["vio1"], "flute": ["flu1"]},
            },
        },
        "lists.json",
    )
    found = discover("music21", root, split_lists=lists)
    assert found.classes == ("violin", "flute", "acoustic_guitar")
    assert not found.problems  # congas is listed but outside the class order: noted, not an error
    assert {(i.clip_id, i.split) for i in found.items} == {
        ("vio0", "train"),
        ("vio1", "test"),
        ("flu0", "train"),
        ("flu1", "test"),
        ("aco0", "train"),
    }
    notes = " | ".join(found.notes)
    assert "class 'congas' is listed by lists.json but not in its class order" in notes
    assert "acoustic_guitar: 1 video(s) not in lists.json" in notes
    assert "violin: 1 clip(s) listed in lists.json have no video file" in notes


# ------------------------------------------------------------------------------------------------
# extractors


def test_random_tiny_extractors_shapes_and_seed(video_root: Path, tiny) -> None:
    clip = decode_clip(video_root / "violin" / "vio0.mp4")
    ((boxes, scores),) = tiny.detector.top_boxes([clip.frames], ["a photo of a violin"])
    assert boxes.shape == (len(clip.frames), 4) and scores.shape == (len(clip.frames),)
    assert (boxes >= 0).all() and (boxes[:, [0, 2]] <= 128).all() and (boxes[:, [1, 3]] <= 96).all()
    assert ((scores >= 0) & (scores <= 1)).all()
    objects = tiny.image_encoder.encode(list(clip.frames))
    motion = tiny.motion_encoder.encode([clip.motion_frames])
    assert objects.shape == (len(clip.frames), OBJECT_DIM) and objects.dtype == np.float32
    assert motion.shape == (1, MOTION_TOKENS, MOTION_DIM) and np.isfinite(motion).all()
    again = build_random_tiny_extractors(device="cpu", seed=0)
    np.testing.assert_array_equal(again.motion_encoder.encode([clip.motion_frames]), motion)
    other = build_random_tiny_extractors(device="cpu", seed=1)
    assert not np.allclose(other.image_encoder.encode(list(clip.frames)), objects)
    described = tiny.describe()
    assert described["kind"] == "random-tiny"
    assert {described[r]["pretrained"] for r in ("detector", "image", "motion")} == {False}
    assert described["motion"]["model_class"] == "VideoMAEModel"


def test_crop_boxes_uses_box_or_whole_frame() -> None:
    frames = np.arange(2 * 10 * 20 * 3, dtype=np.uint8).reshape(2, 10, 20, 3)
    boxes = np.array([[2.2, 1.0, 7.6, 6.0], [3.0, 3.0, 3.5, 9.0]], np.float32)
    crops, found = crop_boxes(frames, boxes, np.array([0.9, 0.9]), threshold=0.5)
    assert found.tolist() == [True, False]  # the second box is thinner than 2 px
    np.testing.assert_array_equal(crops[0], frames[0, 1:6, 2:8])
    np.testing.assert_array_equal(crops[1], frames[1])
    crops, found = crop_boxes(frames, boxes, np.array([0.2, 0.9]), threshold=0.5)
    assert found.tolist() == [False, False]
    np.testing.assert_array_equal(crops[0], frames[0])


def test_centre_crop_resize_keeps_the_centre_square() -> None:
    import torch

    frames = torch.zeros(1, 40, 80, 3, dtype=torch.uint8)
    frames[:, :, 20:60] = 255  # white centre square, black sides
    out = centre_crop_resize(frames, 8, 8, "bilinear", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    assert out.shape == (1, 3, 8, 8)
    assert torch.allclose(out, torch.ones_like(out))


def test_pretrained_loader_reads_saved_checkpoints(tmp_path: Path, video_root: Path, tiny) -> None:
    paths = tiny.save_pretrained(tmp_path / "weights")
    ids = PretrainedModelIds(detector=str(paths["detector"]), image=str(paths["image"]), motion=str(paths["motion"]))
    loaded = load_pretrained_extractors(ids, device="cpu", local_files_only=True)
    clip = decode_clip(video_root / "flute" / "flu0.mp4")
    query = ["a photo of a flute"]
    for (b1, s1), (b2, s2) in zip(
        tiny.detector.top_boxes([clip.frames], query), loaded.detector.top_boxes([clip.frames], query)
    ):
        np.testing.assert_allclose(b1, b2, atol=1e-4)
        np.testing.assert_allclose(s1, s2, atol=1e-6)
    np.testing.assert_allclose(
        tiny.image_encoder.encode(list(clip.frames)), loaded.image_encoder.encode(list(clip.frames)), atol=1e-5
    )
    np.testing.assert_allclose(
        tiny.motion_encoder.encode([clip.motion_frames]), loaded.motion_encoder.encode([clip.motion_frames]), atol=1e-5
    )
    described = loaded.describe()
    assert described["kind"] == "pretrained" and described["image"]["pretrained"] is True
    assert described["image"]["name"] == str(paths["image"]) and described["image"]["revision"] == "local folder"
    assert described["motion"]["weights_sha256_16"] == tiny.describe()["motion"]["weights_sha256_16"]


def test_missing_pretrained_weights_say_how_to_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(ExtractorLoadError) as info:
        load_pretrained_extractors(device="cpu", local_files_only=True)
    message = str(info.value)
    assert (
        "google/owlv2-base-patch16-ensemble" in message and "not available in the local Hugging Face cache" in message
    )
    assert "hf download google/owlv2-base-patch16-ensemble" in message and "--extractors random-tiny" in message
    assert "\n" not in message


# ------------------------------------------------------------------------------------------------
# the pipeline, end to end


def _check_dataset(uri: str, cache: Path, settings=None) -> None:
    table = open_dataset(uri, cache_dir=cache, settings=settings)
    manifest = table.manifest
    assert len(table) == 6
    assert manifest["classes"] == ["acoustic_guitar", "flute", "violin"]
    assert manifest["audio"]["sample_rate"] == 11025
    assert manifest["extractors"]["kind"] == "random-tiny"
    assert manifest["extractors"]["object"]["pretrained"] is False
    assert manifest["extractors"]["object"]["detector"]["model_class"] == "Owlv2ForObjectDetection"
    assert manifest["extractors"]["motion"]["name"] == "random-tiny/videomae"
    assert manifest["extra"]["ingest"]["frames"] == 3 * (2 + 4)  # 2.4 s -> 2 frames, 3.6 s -> 4, per class
    names = set()
    for row in range(len(table)):
        name = table.class_name(row)
        names.add(name)
        audio = table.audio(row)
        n_frames = table.object_features(row).shape[0]
        seconds = 2.4 if n_frames == 2 else 3.6
        assert n_frames in (2, 4)
        assert audio.dtype == np.int16 and abs(audio.shape[0] - seconds * 11025) <= 600
        assert table.object_features(row).shape == (n_frames, OBJECT_DIM)
        assert table.motion_features(row).shape == (MOTION_TOKENS, MOTION_DIM)
        assert table.source(row) == f"{name}/{table.clip_id(row)}.mp4"
    assert names == set(CLASSES)


def test_ingest_to_file_and_read_back(tmp_path: Path, video_root: Path, tiny) -> None:
    found = discover("music21", video_root)
    uri = f"file://{tmp_path}/ds"
    writer = open_writer(found, uri, tiny, IngestSettings())
    report = ingest(found, writer, tiny, IngestSettings(group_clips=4), root=video_root, progress=False)
    assert report.ok and report.stats.written == 6 and report.skipped_existing == 0
    assert report.stats.frames == 18 and 0 <= report.stats.frames_without_detection <= 18
    _check_dataset(uri, tmp_path / "cache")


def test_ingest_to_s3_and_read_back(tmp_path: Path, video_root: Path, tiny, s3_server, s3_bucket: str) -> None:
    found = discover("music21", video_root)
    uri = f"{s3_bucket}/datasets/music"
    writer = open_writer(found, uri, tiny, storage_settings=s3_server.settings)
    report = ingest(found, writer, tiny, root=video_root, progress=False)
    assert report.ok
    _check_dataset(uri, tmp_path / "cache", s3_server.settings)


def test_bad_files_block_the_commit_until_fixed_then_resume(tmp_path: Path, video_root: Path, tiny) -> None:
    root = _copy_tree(video_root, tmp_path / "root")
    write_synthetic_video(root / "violin" / "mute.mp4", with_audio=False, seconds=1.0)
    (root / "flute" / "broken.mp4").write_bytes(b"\x00" * 4096)
    uri = f"file://{tmp_path}/ds"
    said: list[str] = []
    found = discover("music21", root)
    writer = open_writer(found, uri, tiny, part_rows=1)  # every clip its own part: fine-grained resume
    report = ingest(found, writer, tiny, root=root, progress=False, echo=said.append)
    assert not report.committed and report.stats.written == 6
    assert sorted(Path(p.path).name for p in report.problems) == ["broken.mp4", "mute.mp4"]
    assert any("mute.mp4: has no audio track" in line for line in said)
    assert not (tmp_path / "ds" / "manifest.json").exists()
    with pytest.raises(DatasetError, match="incomplete dataset"):
        read_manifest(uri)

    # Fix the input; the rerun skips the six clips already in parts and commits.
    (root / "violin" / "mute.mp4").unlink()
    (root / "flute" / "broken.mp4").unlink()
    found = discover("music21", root)
    writer = open_writer(found, uri, tiny, part_rows=1)
    assert writer.existing_clip_ids() == {i.clip_id for i in found.items}
    report = ingest(found, writer, tiny, root=root, progress=False)
    assert report.ok and report.skipped_existing == 6 and report.stats.written == 0
    assert sum(read_manifest(uri)["totals"].values()) == 6


def test_skip_bad_commits_and_lists_the_left_out_files(tmp_path: Path, video_root: Path, tiny) -> None:
    root = _copy_tree(video_root, tmp_path / "root")
    write_synthetic_video(root / "violin" / "mute.mp4", with_audio=False, seconds=1.0)
    uri = f"file://{tmp_path}/ds"
    found = discover("music21", root)
    report = ingest(
        found, open_writer(found, uri, tiny), tiny, root=root, skip_bad=True, progress=False, echo=lambda _: None
    )
    assert report.committed and not report.ok
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert manifest["extra"]["skipped_files"] == [
        f"{root / 'violin' / 'mute.mp4'}: has no audio track (a sound-separation clip needs its sound)"
    ]
    assert sum(manifest["totals"].values()) == 6


def test_refused_s3_keys_fail_before_any_work(
    tmp_path: Path, video_root: Path, tiny, s3_server, s3_bucket: str
) -> None:
    from dataclasses import replace

    from contavsep.storage import StorageError

    found = discover("music21", video_root)
    wrong = replace(s3_server.settings, secret_key="not-the-secret", keys_from="CONTAVSEP_S3_SECRET_KEY")
    with pytest.raises(StorageError, match="refused the credentials.*check CONTAVSEP_S3_SECRET_KEY"):
        open_writer(found, f"{s3_bucket}/ds", tiny, storage_settings=wrong)
