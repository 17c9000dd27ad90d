"""The synthetic benchmark: separable classes, distinct clips, determinism, audio-visual
correspondence, both storage backends, and the optional soundfont renderer's failure mode."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from contavsep import storage
from contavsep.config import ConfigError
from contavsep.data.format.reader import open_dataset
from contavsep.data.synthetic import soundfont
from contavsep.data.synthetic.instruments import MUSIC21_CLASS_ORDER, SYNTH_CLASS_ORDER, TIMBRES
from contavsep.data.synthetic.score import compose
from contavsep.data.synthetic.synth import (
    MIN_PAPER_SAMPLES,
    SynthConfig,
    build_synthetic,
    synth_clip,
)
from contavsep.data.synthetic.visual_sim import (
    envelope_descriptor,
    motion_class_component,
    motion_projection,
    object_prototype,
)

TINY = SynthConfig(classes=3, clips_per_class=(2, 1, 1), seconds=1.0, seed=7)


def mean_log_spectrum(audio: np.ndarray) -> np.ndarray:
    """Log of the clip's mean power spectrum (512-point STFT), lightly smoothed over frequency."""
    x = audio.astype(np.float64) / 32768.0
    frames = np.lib.stride_tricks.sliding_window_view(x, 512)[::256] * np.hanning(512)
    power = (np.abs(np.fft.rfft(frames, axis=1)) ** 2).mean(axis=0)
    smooth = np.convolve(np.log(power + 1e-10), np.ones(9) / 9, mode="same")
    return smooth - smooth.mean()


def test_classes_are_separable_by_their_spectra() -> None:
    cfg = SynthConfig(seconds=3.0, seed=11)
    classes = list(MUSIC21_CLASS_ORDER)
    train = {c: np.array([mean_log_spectrum(synth_clip(c, "train", i, cfg).audio) for i in range(5)]) for c in classes}
    centroids = np.array([train[c].mean(axis=0) for c in classes])
    hits = []
    for label, c in enumerate(classes):
        for i in range(3):
            v = mean_log_spectrum(synth_clip(c, "test", i, cfg).audio)
            hits.append(int(np.argmin(((centroids - v) ** 2).sum(axis=1))) == label)
    accuracy = float(np.mean(hits))
    assert accuracy >= 0.7, f"nearest-centroid accuracy {accuracy:.2f} on held-out clips (chance 0.05)"


def test_clips_differ_and_are_deterministic() -> None:
    cfg = SynthConfig(seconds=2.0)
    for name in ("violin", "drum", "guzheng"):
        a, b = synth_clip(name, "train", 0, cfg), synth_clip(name, "train", 1, cfg)
        again = synth_clip(name, "train", 0, cfg)
        np.testing.assert_array_equal(a.audio, again.audio)
        np.testing.assert_array_equal(a.motion_features, again.motion_features)
        corr = np.corrcoef(a.audio.astype(float), b.audio.astype(float))[0, 1]
        assert abs(corr) < 0.5, f"{name}: two clips are near copies (corr {corr:.2f})"
        assert not np.allclose(a.object_features, b.object_features)
        assert a.audio.dtype == np.int16 and a.audio.shape == (cfg.num_samples,)
        assert 0.25 * 32767 < np.abs(a.audio).max() < 32767  # a real level, never clipped
    other_seed = synth_clip("violin", "train", 0, SynthConfig(seconds=2.0, seed=1))
    assert not np.array_equal(other_seed.audio, synth_clip("violin", "train", 0, cfg).audio)


def test_every_instrument_renders_sound_in_its_register() -> None:
    cfg = SynthConfig(classes=21, seconds=1.5)
    for name in SYNTH_CLASS_ORDER:
        clip = synth_clip(name, "val", 3, cfg)
        frames = np.lib.stride_tricks.sliding_window_view(clip.audio.astype(float), 256)[::256]
        loud = np.sqrt((frames**2).mean(axis=1)) > 0.01 * 32767
        assert loud.mean() > 0.5, f"{name}: mostly silent"
        events = compose(TIMBRES[name], 6.5, np.random.default_rng(0))
        assert len(events) >= 4, f"{name}: too few notes"
        if TIMBRES[name].engine in ("sustained", "plucked"):
            lo, hi = TIMBRES[name].register
            melody = [e.pitch for e in events if e.voice == 0]
            assert min(melody) >= lo - 24 and max(melody) <= hi + 12


def test_visual_features_correspond_per_class_and_per_clip() -> None:
    cfg = SynthConfig(seconds=2.0)
    names = ["flute", "piano", "drum", "erhu"]
    clips = {n: [synth_clip(n, "train", i, cfg) for i in range(4)] for n in names}
    protos = np.array([object_prototype(n) for n in names])
    for label, n in enumerate(names):
        for clip in clips[n]:
            assert clip.object_features.shape == (3, 512) and clip.object_features.dtype == np.float32
            assert (np.argmax(clip.object_features @ protos.T, axis=1) == label).all()
        # per clip: the motion features are explained by the clip's own audio envelope best
        expected = [envelope_descriptor(c.audio / 32768.0, cfg.sample_rate) for c in clips[n]]
        for i, clip in enumerate(clips[n]):
            residual = clip.motion_features - motion_class_component(n)[None, :]
            errors = [np.linalg.norm(residual - d @ motion_projection(d.shape[1])) for d in expected]
            assert int(np.argmin(errors)) == i


def test_same_seed_same_hash_on_file_and_s3(s3_server, s3_bucket: str, tmp_path: Path) -> None:
    a = build_synthetic(f"file://{tmp_path}/a", TINY)
    b = build_synthetic(storage.join(s3_bucket, "synth"), TINY, settings=s3_server.settings)
    c = build_synthetic(f"file://{tmp_path}/c", SynthConfig(classes=3, clips_per_class=(2, 1, 1), seconds=1.0, seed=8))
    assert a["content_hash"] == b["content_hash"] != c["content_hash"]
    assert a["classes"] == list(MUSIC21_CLASS_ORDER[:3])
    assert (
        a["extractors"]["object"]["name"] == "synthetic-clip-prototype"
        and a["extractors"]["object"]["pretrained"] is False
    )
    assert a["extractors"]["motion"]["pretrained"] is False and a["extra"]["synthetic"]["seed"] == 7
    table = open_dataset(storage.join(s3_bucket, "synth"), cache_dir=tmp_path / "cache", settings=s3_server.settings)
    assert table.content_hash == a["content_hash"] and len(table) == 12
    np.testing.assert_array_equal(
        table.audio(table.row_of("bagpipe-test-0000")), synth_clip("bagpipe", "test", 0, TINY).audio
    )


def test_config_errors_and_defaults() -> None:
    assert SynthConfig().num_samples >= MIN_PAPER_SAMPLES  # the paper preset can crop default clips
    assert SynthConfig().classes == 20 and SynthConfig().clips_per_class == (24, 5, 5)
    with pytest.raises(ConfigError, match="21 instruments .*congas"):
        SynthConfig(classes=22)
    with pytest.raises(ConfigError, match="train,val,test"):
        SynthConfig(clips_per_class=(0, 1, 1))
    with pytest.raises(ConfigError, match="--renderer"):
        SynthConfig(renderer="fm")


def test_music21_class_order_matches_the_split_lists() -> None:
    splits = Path(__file__).resolve().parents[2] / "contavsep" / "data" / "music21_contavsep_splits.json"
    if not splits.is_file():
        splits = Path("/work/shared/data/music21_contavsep_splits.json")
    assert tuple(json.loads(splits.read_text())["class_order"]) == MUSIC21_CLASS_ORDER


def test_soundfont_renderer_missing_is_one_clear_error_before_writing(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # no fluidsynth on PATH
    monkeypatch.setenv(soundfont.SOUNDFONT_ENV, str(tmp_path / "missing.sf2"))
    with pytest.raises(soundfont.RendererUnavailable) as info:
        build_synthetic(
            f"file://{tmp_path}/ds", SynthConfig(classes=2, clips_per_class=(1, 0, 0), renderer="soundfont")
        )
    message = str(info.value)
    assert "fluidsynth" in message and "missing.sf2" in message and "additive" in message and "\n" not in message
    assert not (tmp_path / "ds").exists()


def test_midi_file_structure() -> None:
    events = compose(TIMBRES["violin"], 3.0, np.random.default_rng(0))
    data = soundfont.midi_bytes(events, TIMBRES["violin"])
    assert data[:4] == b"MThd" and int.from_bytes(data[8:10], "big") == 0  # format 0
    assert data[14:18] == b"MTrk"
    track = data[22:]
    assert len(track) == int.from_bytes(data[18:22], "big") and track.endswith(b"\xff\x2f\x00")
    assert b"\xc0\x28" in track  # program change to General-MIDI violin (40)
    # walk the events: every note-on has a note-off, onsets increase
    i, tick, ons, offs = 0, 0, 0, 0
    while i < len(track):
        delta = 0
        while True:
            byte = track[i]
            i += 1
            delta = (delta << 7) | (byte & 0x7F)
            if byte < 0x80:
                break
        tick += delta
        status = track[i]
        if status == 0xFF:
            i += 3 + track[i + 2]
        elif status & 0xF0 in (0x80, 0x90):
            ons += status & 0xF0 == 0x90
            offs += status & 0xF0 == 0x80
            i += 3
        else:
            i += 2
    assert ons == offs == len(events)
    assert abs(tick / 960.0 - max(e.onset + e.duration for e in events)) < 0.01
    drums = soundfont.midi_bytes(compose(TIMBRES["drum"], 2.0, np.random.default_rng(0)), TIMBRES["drum"])
    assert b"\x99" in drums and b"\xc9" not in drums  # percussion channel 10, no program change


def _soundfont_available() -> bool:
    try:
        soundfont.check_soundfont_renderer()
    except soundfont.RendererUnavailable:
        return False
    return True


@pytest.mark.skipif(
    not _soundfont_available(),
    reason="fluidsynth or a GM soundfont is not installed (Debian: fluidsynth fluid-soundfont-gm)",
)
def test_soundfont_renderer_end_to_end(tmp_path: Path) -> None:
    # .ci/run installs fluidsynth and fluid-soundfont-gm, so CI renders General-MIDI instruments for real.
    uri = f"file://{tmp_path}/sf"
    cfg = SynthConfig(classes=3, clips_per_class=(2, 1, 1), seconds=1.0, renderer="soundfont", seed=4)
    manifest = build_synthetic(uri, cfg)
    assert manifest["counts"]["train"] == {"accordion": 2, "bagpipe": 2, "bassoon": 2}
    table = open_dataset(uri, cache_dir=tmp_path / "cache")
    levels = []
    for row in range(len(table)):
        audio = table.audio(row).astype(np.float64)
        assert len(audio) == cfg.num_samples
        levels.append(np.sqrt(np.mean(audio**2)))
    assert min(levels) > 100.0  # every clip sounds (int16 RMS), none is silent
    assert len({table.audio(r).tobytes() for r in range(len(table))}) == len(table)
