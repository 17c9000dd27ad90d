"""Media files with PyAV: decode a video into mono audio and sampled RGB frames; write test videos.

One demux pass per file decodes both streams. Audio is down-mixed to mono at the file's own rate
and then resampled with torchaudio (band-limited sinc), so every clip lands on one sample rate.
Frames are picked at fixed times and converted to RGB only when picked, so a long video costs one
decode but not one colour conversion per frame:

- object frames at ``frame_rate`` (paper: 1 fps), at the centres of consecutive 1/frame_rate
  windows (0.5 s, 1.5 s, ... at 1 fps);
- ``motion_frames`` frames (VideoMAE: 16) spread uniformly over the whole clip, again at the
  centres of equal windows.

Each target takes the first decoded frame at or after its time (the last frame if the stream ends
first). Anything that makes a file unusable (unreadable container, no audio track, no video track,
no decodable frame) raises :class:`MediaError` naming the file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
import torchaudio

from contavsep.errors import ContavsepError


class MediaError(ContavsepError):
    """A media file cannot be used; the message names the file and says why."""


@dataclass(frozen=True, eq=False)
class DecodedClip:
    """Everything the ingestion needs from one video file.

    Shape:
        - audio: float32 :math:`(S,)`, mono, in [-1, 1] (before int16 quantisation), at ``sample_rate``.
        - frames: uint8 :math:`(N, H, W, 3)` RGB, one per object-frame time (``frame_times``, seconds).
        - motion_frames: uint8 :math:`(M, H, W, 3)` RGB, ``M`` frames spread uniformly over the clip.
    """

    path: str
    audio: np.ndarray
    sample_rate: int
    frames: np.ndarray
    frame_times: np.ndarray
    motion_frames: np.ndarray
    duration: float  # seconds of the clip that were used (after any max_seconds cap)


def _window_centres(duration: float, count: int) -> np.ndarray:
    """Centres of ``count`` equal windows over [0, duration] (seconds)."""
    return (np.arange(count, dtype=np.float64) + 0.5) * (duration / count)


def object_frame_times(duration: float, frame_rate: float) -> np.ndarray:
    """Times (s) of the object frames: one per 1/frame_rate window, at its centre; at least one.

    Shape:
        - output: float64 :math:`(N,)` with ``N = max(1, round(duration * frame_rate))``.
    """
    count = max(1, math.floor(duration * frame_rate + 0.5))
    if count == 1:
        # A clip shorter than about one window still gets one frame, from its middle if need be.
        return np.array([min(0.5 / frame_rate, duration / 2)])
    return (np.arange(count, dtype=np.float64) + 0.5) / frame_rate


class _FramePicker:
    """Keeps, for each target time, the first offered frame whose time is at or after it."""

    def __init__(self, times: np.ndarray):
        self.times = times
        self.picked: list[np.ndarray | None] = [None] * len(times)
        self.next = 0

    def offer(self, time: float, rgb: _LazyRGB) -> None:
        while self.next < len(self.times) and self.times[self.next] <= time:
            self.picked[self.next] = rgb.get()
            self.next += 1

    @property
    def done(self) -> bool:
        return self.next >= len(self.times)

    def finish(self, last: _LazyRGB | None) -> list[np.ndarray]:
        # Targets past the last decoded frame (metadata durations are estimates) reuse that frame.
        for i in range(self.next, len(self.times)):
            self.picked[i] = last.get() if last is not None else None
        return [p for p in self.picked if p is not None]


class _LazyRGB:
    """One decoded frame, converted to (possibly down-scaled) RGB at most once, on first use."""

    def __init__(self, frame: av.VideoFrame, max_side: int | None):
        self.frame = frame
        self.max_side = max_side
        self.rgb: np.ndarray | None = None

    def get(self) -> np.ndarray:
        if self.rgb is None:
            width, height = self.frame.width, self.frame.height
            scale = 1.0
            if self.max_side is not None and max(width, height) > self.max_side:
                scale = self.max_side / max(width, height)
            self.rgb = self.frame.to_ndarray(
                format="rgb24",
                width=max(1, round(width * scale)),
                height=max(1, round(height * scale)),
                interpolation="AREA" if scale < 1.0 else None,
            )
        return self.rgb


def _stream_seconds(value: int | None, time_base: Fraction | None) -> float | None:
    if value is None or time_base is None:
        return None
    return float(value * time_base)


def _video_duration(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float | None:
    """Duration (s) from stream metadata, else the container's estimate, else frames / rate."""
    duration = _stream_seconds(stream.duration, stream.time_base)
    if duration is None and container.duration is not None:
        duration = container.duration / av.time_base
    if duration is None and stream.frames and stream.average_rate:
        duration = stream.frames / float(stream.average_rate)
    return duration if duration and duration > 0 else None


def resample_mono(wave: np.ndarray, orig_rate: int, sample_rate: int) -> np.ndarray:
    """Band-limited resampling of a mono waveform with torchaudio.

    Shape:
        - wave: float32 :math:`(S_{in},)` at ``orig_rate``.
        - output: float32 :math:`(S_{out},)` at ``sample_rate``, ``S_out ~= S_in * sample_rate / orig_rate``.
    """
    if orig_rate == sample_rate:
        return wave.astype(np.float32, copy=False)
    out = torchaudio.functional.resample(
        torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)), orig_rate, sample_rate
    )
    return out.numpy()


def audio_to_int16(wave: np.ndarray) -> np.ndarray:
    """Quantise float audio in [-1, 1] to int16 PCM (values outside are clipped, not wrapped).

    Shape:
        - wave: float :math:`(S,)`; output: int16 :math:`(S,)`.
    """
    return np.round(np.clip(wave, -1.0, 1.0) * 32767.0).astype(np.int16)


def _reason(exc: BaseException) -> str:
    # FFmpeg errors repeat the file name in str(exc); the message already starts with it.
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def decode_clip(
    path: str | Path,
    *,
    sample_rate: int = 11025,
    frame_rate: float = 1.0,
    motion_frames: int = 16,
    max_seconds: float | None = None,
    max_side: int | None = 960,
) -> DecodedClip:
    """Decode one video file: mono audio at ``sample_rate``, object frames, motion frames.

    Args:
        path: a local video file with one audio and one video stream (the first of each is used).
        sample_rate: output audio rate in Hz.
        frame_rate: object frames per second.
        motion_frames: frames spread uniformly over the clip (for the motion encoder).
        max_seconds: use only the first ``max_seconds`` of the file (None: the whole file).
        max_side: down-scale frames whose longer side exceeds this (None: keep the decoded size);
            960 is the largest input any extractor here uses (OWLv2), so nothing is lost by default.

    Raises:
        MediaError: the file cannot be opened or decoded, or lacks an audio or a video track.
    """
    path = Path(path)
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise MediaError(f"{path}: cannot open as a video file ({_reason(exc)})") from exc
    try:
        return _decode_open_container(container, path, sample_rate, frame_rate, motion_frames, max_seconds, max_side)
    except (av.FFmpegError, ValueError) as exc:
        raise MediaError(f"{path}: decoding failed ({_reason(exc)})") from exc
    finally:
        container.close()


def _decode_open_container(
    container: av.container.InputContainer,
    path: Path,
    sample_rate: int,
    frame_rate: float,
    motion_frames: int,
    max_seconds: float | None,
    max_side: int | None,
) -> DecodedClip:
    if not container.streams.video:
        raise MediaError(f"{path}: has no video track")
    if not container.streams.audio:
        raise MediaError(f"{path}: has no audio track (a sound-separation clip needs its sound)")
    video = container.streams.video[0]
    audio = container.streams.audio[0]
    video.thread_type = "AUTO"  # frame + slice threads: decoding dominates ingestion on CPU

    duration = _video_duration(container, video)
    if duration is None:
        raise MediaError(f"{path}: the video duration is unknown (no stream, container or frame-count metadata)")
    if max_seconds is not None:
        duration = min(duration, max_seconds)
    video_start = _stream_seconds(video.start_time, video.time_base) or 0.0
    audio_start = _stream_seconds(audio.start_time, audio.time_base) or 0.0

    object_times = object_frame_times(duration, frame_rate)
    object_picker = _FramePicker(object_times + video_start)
    motion_picker = _FramePicker(_window_centres(duration, motion_frames) + video_start)

    # Keep the source layout and rate; only the sample format is normalised, then we mix to mono.
    resampler = av.AudioResampler(format="fltp")
    chunks: list[np.ndarray] = []
    audio_rate = audio.rate or audio.codec_context.sample_rate
    audio_needed = None if max_seconds is None else int(math.ceil(max_seconds * audio_rate))
    audio_have = 0
    last_frame: _LazyRGB | None = None
    video_done = audio_done = False

    for packet in container.demux(video, audio):
        if packet.stream.type == "video" and not video_done:
            for frame in packet.decode():
                assert isinstance(frame, av.VideoFrame)  # a video stream's packets hold video frames
                time = frame.time if frame.time is not None else video_start
                last_frame = _LazyRGB(frame, max_side)
                object_picker.offer(time, last_frame)
                motion_picker.offer(time, last_frame)
                if object_picker.done and motion_picker.done:
                    video_done = True
                    break
        elif packet.stream.type == "audio" and not audio_done:
            for frame in packet.decode():
                assert isinstance(frame, av.AudioFrame)
                for out in resampler.resample(frame):
                    chunk = out.to_ndarray().mean(axis=0)  # (channels, n) -> mono (n,)
                    chunks.append(chunk)
                    audio_have += chunk.shape[0]
                    audio_rate = out.sample_rate
            if audio_needed is not None and audio_have >= audio_needed:
                audio_done = True
        if video_done and audio_done:
            break
    if not audio_done:
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray().mean(axis=0))

    frames = object_picker.finish(last_frame)
    motion = motion_picker.finish(last_frame)
    if not frames:
        raise MediaError(f"{path}: no video frame could be decoded")
    wave = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    if audio_start > video_start:
        # Align audio to the video clock: pad the audio that starts late with silence.
        wave = np.concatenate([np.zeros(round((audio_start - video_start) * audio_rate), np.float32), wave])
    if audio_needed is not None:
        wave = wave[:audio_needed]
    if wave.size == 0:
        raise MediaError(f"{path}: the audio track has no decodable samples")
    # Different source resolutions would not stack; frames of one file share one size.
    return DecodedClip(
        path=str(path),
        audio=resample_mono(wave, int(audio_rate), sample_rate),
        sample_rate=sample_rate,
        frames=np.stack(frames),
        frame_times=object_times,
        motion_frames=np.stack(motion),
        duration=duration,
    )


def write_synthetic_video(
    path: str | Path,
    *,
    seconds: float = 3.0,
    fps: int = 10,
    size: tuple[int, int] = (96, 128),
    colour: tuple[int, int, int] = (220, 40, 40),
    tone_hz: float = 220.0,
    audio_rate: int = 22050,
    with_audio: bool = True,
    seed: int = 0,
) -> Path:
    """Write a small H.264/AAC MP4: a coloured square moving over a dark background with a
    harmonic tone (fundamental ``tone_hz``, 4 harmonics, slow tremolo) as its sound.

    Used by the tests and the ingestion benchmark to build ``<class>/<clip>.mp4`` trees: the
    picture and the sound are class-specific, so the extracted features differ between classes.
    ``size`` is (height, width); both must be even (H.264 4:2:0).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = size
    rng = np.random.default_rng(seed)
    n_frames = max(1, round(seconds * fps))
    with av.open(str(path), mode="w", format="mp4") as out:
        vstream = out.add_stream("libx264", rate=fps)
        vstream.width, vstream.height, vstream.pix_fmt = width, height, "yuv420p"
        vstream.options = {"preset": "ultrafast"}
        astream = None
        if with_audio:
            astream = out.add_stream("aac", rate=audio_rate, layout="stereo")

        side = max(8, min(height, width) // 3)
        start = rng.integers(0, [max(1, height - side), max(1, width - side)])
        background = rng.integers(0, 40, size=3)
        for i in range(n_frames):
            img = np.empty((height, width, 3), np.uint8)
            img[:] = background
            # The square bounces horizontally, so consecutive frames differ (motion for VideoMAE).
            phase = (i / max(1, n_frames - 1)) * 2.0
            x = int((start[1] + phase * (width - side)) % max(1, width - side))
            y = int(start[0])
            img[y : y + side, x : x + side] = colour
            for packet in vstream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in vstream.encode():
            out.mux(packet)

        if astream is not None:
            t = np.arange(round(seconds * audio_rate)) / audio_rate
            wave = sum(np.sin(2 * np.pi * tone_hz * k * t + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 5))
            wave = 0.3 * wave * (0.75 + 0.25 * np.sin(2 * np.pi * 2.0 * t))
            stereo = np.stack([wave, wave]).astype(np.float32)
            block = 1024  # AAC frame size
            for offset in range(0, stereo.shape[1], block):
                frame = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(stereo[:, offset : offset + block]), format="fltp", layout="stereo"
                )
                frame.sample_rate = audio_rate
                frame.pts = offset
                for packet in astream.encode(frame):
                    out.mux(packet)
            for packet in astream.encode():
                out.mux(packet)
    return path
