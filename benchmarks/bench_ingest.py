"""Ingestion throughput benchmark: ``python -m benchmarks.bench_ingest [--clips N --seconds S ...]``.

Writes a synthetic MUSIC-21-style tree (``<class>/<clip>.mp4``, H.264 + AAC written with PyAV: a
moving coloured square and a harmonic tone per class), then times the real pipeline on it:
PyAV decode -> OWLv2 -> crops -> CLIP -> VideoMAE -> Parquet parts + manifest on file://. The
extractors are the random-tiny ones (real model classes, tiny configs), so the number measures
decoding, preprocessing and writing more than model compute; with pretrained extractors on a GPU
the models add their own cost. One clip is ingested first, untimed, so that one-off costs (model
import and build, first-call kernel setup) do not count.

Prints one JSON object: clips/s, audio seconds ingested per wall second, frames/s, and the time
spent per stage (decode is summed over the decoding threads, so it can exceed the wall time).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

CLASS_STYLES = [  # (class, colour, fundamental Hz)
    ("violin", (220, 40, 40), 440.0),
    ("flute", (40, 220, 40), 660.0),
    ("cello", (40, 40, 220), 131.0),
    ("trumpet", (220, 220, 40), 523.0),
]


def write_tree(root: Path, clips: int, seconds: float, size: tuple[int, int], fps: int) -> list[Path]:
    """``clips`` videos spread over the classes of :data:`CLASS_STYLES` under ``root``."""
    from contavsep.data.ingest.media import write_synthetic_video

    paths = []
    for i in range(clips):
        name, colour, tone = CLASS_STYLES[i % len(CLASS_STYLES)]
        paths.append(
            write_synthetic_video(
                root / name / f"{name}-{i:04d}.mp4",
                seconds=seconds,
                fps=fps,
                size=size,
                colour=colour,
                tone_hz=tone,
                seed=i,
            )
        )
    return paths


def run(
    clips: int = 16,
    seconds: float = 10.0,
    size: tuple[int, int] = (360, 480),
    fps: int = 25,
    decode_workers: int = 2,
    group_clips: int = 8,
    device: str = "cpu",
) -> dict[str, Any]:
    """Build the tree, warm up on one clip, time the ingestion of all clips; return the numbers."""
    import torch

    from contavsep.data.ingest.extractors import build_random_tiny_extractors
    from contavsep.data.ingest.pipeline import IngestSettings, discover, ingest, open_writer

    with tempfile.TemporaryDirectory(prefix="contavsep-bench-ingest-") as tmp:
        root = Path(tmp) / "videos"
        t0 = time.perf_counter()
        write_tree(root, clips, seconds, size, fps)
        write_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        extractors = build_random_tiny_extractors(device=device)
        build_s = time.perf_counter() - t0
        settings = IngestSettings(decode_workers=decode_workers, group_clips=group_clips)

        warm_root = Path(tmp) / "warm"
        write_tree(warm_root, 1, min(seconds, 2.0), size, fps)
        warm = discover("music21", warm_root)
        ingest(
            warm,
            open_writer(warm, f"file://{tmp}/warm-ds", extractors, settings),
            extractors,
            settings,
            root=warm_root,
            progress=False,
        )

        found = discover("music21", root)
        t0 = time.perf_counter()
        report = ingest(
            found,
            open_writer(found, f"file://{tmp}/ds", extractors, settings),
            extractors,
            settings,
            root=root,
            progress=False,
        )
        wall = time.perf_counter() - t0
        if not report.ok:
            raise RuntimeError(f"benchmark ingestion failed: {[str(p) for p in report.problems]}")
        stats = report.stats
        return {
            "benchmark": "ingest (random-tiny extractors)",
            "clips": stats.written,
            "clip_seconds": seconds,
            "video": f"{size[1]}x{size[0]} @ {fps} fps, H.264 + AAC",
            "device": str(extractors.device),
            "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "machine": platform.processor() or platform.machine(),
            "decode_workers": decode_workers,
            "group_clips": group_clips,
            "clips_per_s": round(stats.written / wall, 3),
            "audio_s_per_s": round(stats.audio_seconds / wall, 2),
            "object_frames_per_s": round(stats.frames / wall, 2),
            "wall_s": round(wall, 3),
            "decode_s_summed": round(stats.decode_seconds, 3),
            "extract_s": round(stats.extract_seconds, 3),
            "write_s": round(stats.write_seconds, 3),
            "frames_without_detection": stats.frames_without_detection,
            "frames": stats.frames,
            "untimed_setup_s": {"write_videos": round(write_s, 2), "build_extractors": round(build_s, 2)},
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_ingest", description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=16, help="videos to ingest (default 16)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each video (default 10)")
    parser.add_argument("--size", default="360x480", help="HEIGHTxWIDTH of the videos, even numbers (default 360x480)")
    parser.add_argument("--fps", type=int, default=25, help="video frame rate (default 25)")
    parser.add_argument("--decode-workers", type=int, default=2, help="decoding threads (default 2)")
    parser.add_argument("--group-clips", type=int, default=8, help="clips per extractor group (default 8)")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | auto (default cpu)")
    args = parser.parse_args(argv)
    height, _, width = args.size.partition("x")
    result = run(
        args.clips,
        args.seconds,
        (int(height), int(width)),
        args.fps,
        args.decode_workers,
        args.group_clips,
        args.device,
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
