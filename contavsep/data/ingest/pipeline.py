"""Ingestion of real videos into a clip dataset (MUSIC-21, or AVE / VGGSound laid out the same way).

Layout ``music21``: ``<root>/<class>/<clip>.mp4`` (also .mkv .webm .mov .avi .m4v); the clip id is
the file name without extension, the class is the folder. Optional split lists (the paper's
MUSIC-21 lists ship with the package) say which clip is train/val/test; otherwise each class is
split by ratios with a seeded shuffle (:mod:`contavsep.data.ingest.splits`).

Per clip (docs/architecture.md section 3):

1. decode (PyAV, :mod:`contavsep.data.ingest.media`): audio -> mono -> 11025 Hz (torchaudio), stored
   whole as int16 (or capped at ``max_seconds``); frames at 1 fps; 16 frames spread uniformly;
2. per 1-fps frame: OWLv2 with the query "a photo of a <class>" -> crop of the top box, or the
   whole frame when nothing is found (counted and reported) -> CLIP image embedding (512);
3. per clip: the 16 frames -> VideoMAE -> 8 x 768 motion features;
4. a :class:`~contavsep.data.format.schema.ClipRecord` to the :class:`~contavsep.data.format.writer.DatasetWriter`.

Decoding runs in a small thread pool ahead of the extractors (PyAV releases the GIL while it
decodes); the extractors run on groups of clips so frames of several clips share forward passes.

Failure policy: a bad file (unreadable, no audio, no video) or bad input (class folder not in
the class list, duplicate clip id) is reported on one line, the run goes on, and all of them are
listed at the end. The manifest (the mark of a complete dataset) is written only when nothing
failed, or when the caller accepts the losses (``skip_bad``); otherwise the parts written so far
stay, and rerunning the same command resumes: clips already in parts are skipped.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from contavsep.data.ingest.extractors import FeatureExtractors, crop_boxes
from contavsep.data.ingest.media import DecodedClip, MediaError, audio_to_int16, decode_clip
from contavsep.data.ingest.splits import SplitLists, assign_splits
from contavsep.errors import ContavsepError
from contavsep.suggest import did_you_mean

VIDEO_SUFFIXES = frozenset({".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v"})
LAYOUTS = ("music21",)


class IngestError(ContavsepError):
    """The ingestion cannot start or go on (missing root, unknown layout, no videos...); one line."""


@dataclass(frozen=True)
class VideoItem:
    """One video to ingest and where its row goes."""

    path: Path
    class_name: str
    clip_id: str
    split: str  # train | val | test


@dataclass(frozen=True)
class Problem:
    """A file or folder that could not be used, and why (one line)."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass(frozen=True)
class Discovery:
    """What a dataset root holds: the videos to ingest, the class list, and what is wrong or notable."""

    items: tuple[VideoItem, ...]
    classes: tuple[str, ...]
    problems: tuple[Problem, ...]  # count as failures (non-zero exit, no manifest unless skip_bad)
    notes: tuple[str, ...]  # informational (clips outside the split lists, listed clips not found...)


@dataclass(frozen=True)
class IngestSettings:
    """How clips are decoded and features extracted (recorded in the manifest)."""

    sample_rate: int = 11025  # Hz of the stored audio
    frame_rate: float = 1.0  # object frames per second
    motion_frames: int = 16  # frames per clip for the motion encoder (VideoMAE reads 16)
    max_seconds: float | None = None  # cap on the decoded length of each file (None: whole file)
    max_side: int = 960  # frames larger than this are down-scaled at decode (OWLv2 reads 960)
    query_template: str = "a photo of a {}"  # detector text query; {} = class name, '_' -> ' '
    score_threshold: float = 0.1  # below this the detector "found nothing": the whole frame is encoded
    group_clips: int = 8  # clips whose frames share extractor forward passes
    decode_workers: int = 2  # decoding threads running ahead of the extractors

    def query(self, class_name: str) -> str:
        return self.query_template.format(class_name.replace("_", " "))

    def as_dict(self) -> dict[str, Any]:
        return {
            "frame_rate": self.frame_rate,
            "motion_frames": self.motion_frames,
            "max_seconds": self.max_seconds,
            "max_side": self.max_side,
            "query_template": self.query_template,
            "score_threshold": self.score_threshold,
        }


@dataclass
class IngestStats:
    """Counts and timings of one run of :func:`run_ingest`."""

    clips_total: int = 0  # clips this run had to do (after skipping those already written)
    written: int = 0
    failed: list[Problem] = field(default_factory=list)
    frames: int = 0
    frames_without_detection: int = 0
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    decode_seconds: float = 0.0  # summed over decoding threads
    extract_seconds: float = 0.0
    write_seconds: float = 0.0

    @property
    def clips_per_second(self) -> float:
        return self.written / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "clips_written": self.written,
            "clips_failed": len(self.failed),
            "frames": self.frames,
            "frames_without_detection": self.frames_without_detection,
            "audio_seconds": round(self.audio_seconds, 3),
            "wall_seconds": round(self.wall_seconds, 3),
            "clips_per_second": round(self.clips_per_second, 4),
        }


@dataclass
class IngestReport:
    """The outcome of :func:`ingest`: what was written, what failed, whether it was committed."""

    uri: str
    classes: tuple[str, ...]
    skipped_existing: int
    stats: IngestStats
    problems: list[Problem]  # discovery problems + failed files, in that order
    notes: tuple[str, ...]
    committed: bool
    manifest: dict[str, Any] | None

    @property
    def ok(self) -> bool:
        return self.committed and not self.problems


# ------------------------------------------------------------------------------------------------
# discovery


def check_layout(layout: str) -> None:
    """Raise :class:`IngestError` for an unknown layout, suggesting the closest known one."""
    if layout not in LAYOUTS:
        hint = did_you_mean(layout, LAYOUTS)
        raise IngestError(
            f"unknown layout '{layout}'{hint}; supported layouts: {', '.join(LAYOUTS)} (<class>/<clip>.mp4)"
        )


def _videos_in(folder: Path) -> tuple[list[Path], int]:
    """Video files directly in ``folder`` (sorted) and how many other visible files it holds."""
    videos, others = [], 0
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or not p.is_file():
            continue
        if p.suffix.lower() in VIDEO_SUFFIXES:
            videos.append(p)
        else:
            others += 1
    return videos, others


def discover_music21(
    root: str | Path,
    *,
    classes: Sequence[str] | None = None,
    split_lists: SplitLists | None = None,
    split_ratios: tuple[float, float, float] = (0.8, 0.1, 0.1),
    split_seed: int = 0,
) -> Discovery:
    """Find ``<root>/<class>/<clip>.<video>`` files and give each its class and split.

    The class list is ``classes`` if given, else the split lists' class order, else the sorted
    class folders. A class folder outside that list is a problem (its files are not ingested),
    except for classes the split lists name but leave out of their order (MUSIC-21's ``congas``),
    which are noted and skipped. With split lists, videos they do not mention are noted and
    skipped; listed clips with no file are noted.
    """
    root = Path(root)
    if not root.exists():
        raise IngestError(f"root {root} does not exist")
    if not root.is_dir():
        raise IngestError(f"root {root} is not a directory (expected <root>/<class>/<clip>.mp4)")
    folders = {p.name: p for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")}
    found: dict[str, list[Path]] = {}
    ignored = 0
    for name, folder in folders.items():
        videos, others = _videos_in(folder)
        ignored += others
        if videos:
            found[name] = videos
    if not found:
        raise IngestError(
            f"no videos under {root}: expected <class>/<clip>.mp4 (or {', '.join(sorted(VIDEO_SUFFIXES))})"
        )

    if classes is not None:
        class_list = tuple(classes)
    elif split_lists is not None:
        class_list = split_lists.class_order
    else:
        class_list = tuple(sorted(found))
    if len(set(class_list)) != len(class_list) or not class_list:
        raise IngestError(f"the class list must be non-empty and without duplicates, got {list(class_list)}")

    problems: list[Problem] = []
    notes: list[str] = []
    if ignored:
        notes.append(f"ignored {ignored} non-video file(s) in class folders")
    excluded_by_lists = (split_lists.listed_classes() - set(split_lists.class_order)) if split_lists else set()
    for name, videos in found.items():
        if name in class_list:
            continue
        if name in excluded_by_lists:
            assert split_lists is not None  # only split lists exclude a class
            notes.append(
                f"{folders[name]}: class '{name}' is listed by {split_lists.source} but not in its class order;"
                f" skipped {len(videos)} video(s)"
            )
            continue
        hint = did_you_mean(name, class_list)
        problems.append(
            Problem(
                str(folders[name]),
                f"class folder '{name}' is not in the class list{hint}; its {len(videos)} video(s) were not ingested",
            )
        )
    for name in class_list:
        if name not in found:
            problems.append(Problem(str(root / name), f"class '{name}' of the class list has no videos under {root}"))

    ratio_splits = None
    if split_lists is None:
        ratio_splits = assign_splits(
            {c: [p.stem for p in found[c]] for c in class_list if c in found}, split_ratios, split_seed
        )

    items: list[VideoItem] = []
    owner: dict[str, Path] = {}
    for class_name in class_list:
        not_listed = 0
        for path in found.get(class_name, []):
            clip_id = path.stem
            if clip_id in owner:
                problems.append(
                    Problem(
                        str(path),
                        f"duplicate clip id '{clip_id}' (already used by {owner[clip_id]}); rename one of them",
                    )
                )
                continue
            owner[clip_id] = path
            if split_lists is not None:
                split = split_lists.split_of(class_name, clip_id)
                if split is None:
                    not_listed += 1
                    continue
            else:
                split = ratio_splits[(class_name, clip_id)]  # type: ignore[index]
            items.append(VideoItem(path=path, class_name=class_name, clip_id=clip_id, split=split))
        if split_lists is not None:
            if not_listed:
                notes.append(f"{root / class_name}: {not_listed} video(s) not in {split_lists.source}; skipped")
            missing = split_lists.clip_ids(class_name) - {p.stem for p in found.get(class_name, [])}
            if missing and class_name in found:
                notes.append(
                    f"{root / class_name}: {len(missing)} clip(s) listed in {split_lists.source} have no video file"
                )
    return Discovery(items=tuple(items), classes=class_list, problems=tuple(problems), notes=tuple(notes))


def discover(layout: str, root: str | Path, **kwargs: Any) -> Discovery:
    """Dispatch on ``layout`` (only ``music21`` so far); see :func:`discover_music21`."""
    check_layout(layout)
    return discover_music21(root, **kwargs)


# ------------------------------------------------------------------------------------------------
# the pipeline


def _decode_timed(item: VideoItem, settings: IngestSettings) -> tuple[DecodedClip | MediaError, float]:
    start = time.perf_counter()
    try:
        result: DecodedClip | MediaError = decode_clip(
            item.path,
            sample_rate=settings.sample_rate,
            frame_rate=settings.frame_rate,
            motion_frames=settings.motion_frames,
            max_seconds=settings.max_seconds,
            max_side=settings.max_side,
        )
    except MediaError as exc:
        result = exc
    return result, time.perf_counter() - start


def _decoded_in_order(
    items: Sequence[VideoItem], settings: IngestSettings
) -> Iterator[tuple[VideoItem, DecodedClip | MediaError, float]]:
    """Decode ahead in a thread pool, yielding in input order, holding at most a few clips."""
    ahead = max(1, settings.decode_workers) * 2
    with ThreadPoolExecutor(max_workers=max(1, settings.decode_workers), thread_name_prefix="contavsep-decode") as pool:
        queue: list[tuple[VideoItem, Future]] = []
        feed = iter(items)
        for item in feed:
            queue.append((item, pool.submit(_decode_timed, item, settings)))
            if len(queue) >= ahead:
                break
        while queue:
            item, future = queue.pop(0)
            result, seconds = future.result()
            nxt = next(feed, None)
            if nxt is not None:
                queue.append((nxt, pool.submit(_decode_timed, nxt, settings)))
            yield item, result, seconds


def _source(item: VideoItem, root: Path | None, clip: DecodedClip, settings: IngestSettings) -> str:
    rel = item.path.relative_to(root) if root is not None and item.path.is_relative_to(root) else item.path
    span = f"#t=0,{clip.duration:.3f}" if settings.max_seconds is not None else ""
    return f"{rel.as_posix()}{span}"


def _extract_group(
    group: list[tuple[VideoItem, DecodedClip]],
    extractors: FeatureExtractors,
    settings: IngestSettings,
    stats: IngestStats,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Object and motion features of a group of decoded clips: per clip ((F, 512), (8, 768))."""
    clips = [clip for _, clip in group]
    detections = extractors.detector.top_boxes(
        [c.frames for c in clips], [settings.query(item.class_name) for item, _ in group]
    )
    crops: list[np.ndarray] = []
    lengths: list[int] = []
    for clip, (boxes, scores) in zip(clips, detections):
        clip_crops, found = crop_boxes(clip.frames, boxes, scores, settings.score_threshold)
        crops.extend(clip_crops)
        lengths.append(len(clip_crops))
        stats.frames += len(clip_crops)
        stats.frames_without_detection += int((~found).sum())
    embeddings = extractors.image_encoder.encode(crops)
    motion = extractors.motion_encoder.encode([c.motion_frames for c in clips])
    bounds = np.cumsum([0, *lengths])
    return [(embeddings[bounds[i] : bounds[i + 1]], motion[i]) for i in range(len(clips))]


def run_ingest(
    items: Sequence[VideoItem],
    writer: Any,
    extractors: FeatureExtractors,
    settings: IngestSettings = IngestSettings(),
    *,
    root: Path | None = None,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
) -> IngestStats:
    """Decode, extract and hand each clip of ``items`` to ``writer.add`` (a DatasetWriter).

    Bad files are reported through ``echo`` and collected in ``stats.failed``; the run goes on.
    Storage errors from the writer propagate (nothing more can be written).
    """
    from tqdm import tqdm

    from contavsep.data.format.manifest import DatasetError
    from contavsep.data.format.schema import ClipRecord

    stats = IngestStats(clips_total=len(items))
    # disable=None: tqdm draws only on a terminal, so logs of batch jobs get no carriage-return noise.
    bar = tqdm(
        total=len(items),
        unit="clip",
        desc="ingest",
        disable=None if progress else True,
        file=sys.stderr,
        dynamic_ncols=True,
    )
    say = echo if echo is not None else (lambda line: bar.write(line, file=sys.stderr))
    start = time.perf_counter()

    def flush(group: list[tuple[VideoItem, DecodedClip]]) -> None:
        t0 = time.perf_counter()
        features = _extract_group(group, extractors, settings, stats)
        t1 = time.perf_counter()
        stats.extract_seconds += t1 - t0
        for (item, clip), (objects, motion) in zip(group, features):
            record = ClipRecord(
                clip_id=item.clip_id,
                class_name=item.class_name,
                split=item.split,
                audio=audio_to_int16(clip.audio),
                sample_rate=clip.sample_rate,
                object_features=objects,
                motion_features=motion,
                source=_source(item, root, clip, settings),
            )
            try:
                writer.add(record)
            except DatasetError as exc:  # a record the writer refuses is that file's failure
                stats.failed.append(Problem(str(item.path), str(exc)))
                say(f"skipped {item.path}: {exc}")
                continue
            stats.written += 1
            stats.audio_seconds += clip.audio.shape[0] / clip.sample_rate
        stats.write_seconds += time.perf_counter() - t1
        bar.update(len(group))

    try:
        group: list[tuple[VideoItem, DecodedClip]] = []
        for item, result, seconds in _decoded_in_order(items, settings):
            stats.decode_seconds += seconds
            if isinstance(result, MediaError):
                stats.failed.append(Problem(str(item.path), str(result).removeprefix(f"{item.path}: ")))
                say(f"skipped {result}")
                bar.update(1)
                continue
            group.append((item, result))
            if len(group) >= settings.group_clips:
                flush(group)
                group = []
        if group:
            flush(group)
    finally:
        bar.close()
        stats.wall_seconds = time.perf_counter() - start
    return stats


def open_writer(
    discovery: Discovery,
    out_uri: str,
    extractors: FeatureExtractors,
    settings: IngestSettings = IngestSettings(),
    *,
    resume: bool = True,
    overwrite: bool = False,
    part_rows: int = 8,
    description: str = "",
    storage_settings: Any = None,
) -> Any:
    """The :class:`~contavsep.data.format.writer.DatasetWriter` of an ingestion, with the audio settings
    and the extractors (names, revisions, pretrained flags, crop settings) for the manifest.

    ``resume`` keeps the parts of an earlier unfinished run (their clips are skipped); otherwise
    they are cleared. ``overwrite`` replaces a complete dataset. ``part_rows`` is also how many
    clips per split an interruption can lose (rows not yet in a part are redone on resume).

    Raises:
        contavsep.storage.StorageError: the storage refuses the keys or cannot be reached.
        contavsep.data.format.manifest.DatasetError: a complete dataset exists (no ``overwrite``), or the
            parts to resume were written with another class list or schema.
    """
    from contavsep.data.format.writer import DatasetWriter

    audio = {
        "sample_rate": settings.sample_rate,
        "channels": 1,
        "dtype": "int16",
        "max_seconds": settings.max_seconds,
        "resampler": "torchaudio.functional.resample (sinc, hann)",
    }
    described = extractors.describe()
    manifest_extractors = {
        "kind": described["kind"],
        # "object" = the features stored per frame (CLIP on the detector's crop); the detector nests in it.
        "object": {**described["image"], "detector": described["detector"], **settings.as_dict()},
        "motion": described["motion"],
    }
    return DatasetWriter(
        out_uri,
        list(discovery.classes),
        audio=audio,
        extractors=manifest_extractors,
        description=description,
        resume=resume and not overwrite,
        overwrite=overwrite,
        part_rows=part_rows,
        settings=storage_settings,
    )


def ingest(
    discovery: Discovery,
    writer: Any,
    extractors: FeatureExtractors,
    settings: IngestSettings = IngestSettings(),
    *,
    root: str | Path | None = None,
    skip_bad: bool = False,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
) -> IngestReport:
    """Ingest the discovered videos through ``writer`` (see :func:`open_writer`) and commit the
    dataset if nothing failed, or despite failures with ``skip_bad``. Clips already in the
    writer's resumed parts are skipped.

    Raises:
        contavsep.storage.StorageError: the storage failed mid-run; nothing is committed, the parts
            written so far stay for a resumed run.
    """
    existing = writer.existing_clip_ids()
    todo = [item for item in discovery.items if item.clip_id not in existing]
    stats = run_ingest(
        todo, writer, extractors, settings, root=Path(root) if root is not None else None, progress=progress, echo=echo
    )
    problems = [*discovery.problems, *stats.failed]
    manifest = None
    if not problems or skip_bad:
        extra = {
            "ingest": {**stats.as_dict(), "clips_resumed": len(discovery.items) - len(todo)},
            "skipped_files": [str(p) for p in problems],
            "notes": list(discovery.notes),
        }
        manifest = writer.commit(extra=extra)
    return IngestReport(
        uri=writer.uri,
        classes=discovery.classes,
        skipped_existing=len(discovery.items) - len(todo),
        stats=stats,
        problems=problems,
        notes=discovery.notes,
        committed=manifest is not None,
        manifest=manifest,
    )


def iter_lines(report: IngestReport, resume_command: str = "") -> Iterable[str]:
    """The end-of-run summary: counts, detection misses, failures, and how to resume."""
    s = report.stats
    yield (
        f"ingested {s.written} clip(s) in {s.wall_seconds:.1f} s ({s.clips_per_second:.2f} clips/s)"
        f"; {report.skipped_existing} already written (resumed)"
    )
    if s.frames:
        yield (
            f"object frames: {s.frames}; no detection above the threshold in {s.frames_without_detection}"
            f" ({100.0 * s.frames_without_detection / s.frames:.1f}%): whole frame encoded instead"
        )
    for note in report.notes:
        yield f"note: {note}"
    if report.problems:
        yield f"{len(report.problems)} problem(s):"
        for problem in report.problems:
            yield f"  {problem}"
    again = f" ({resume_command})" if resume_command else ""
    if report.committed:
        totals = report.manifest["totals"] if report.manifest else {}
        yield (
            f"committed {report.uri} (manifest.json written): "
            + ", ".join(f"{k} {v}" for k, v in totals.items())
            + (f"; {len(report.problems)} file(s) left out (--skip-bad)" if report.problems else "")
        )
    else:
        yield (
            f"NOT committed: {report.uri} has no manifest.json, so no trial will use it. Fix or remove the files"
            f" above and rerun the same command{again} to resume (clips already written are skipped),"
            f" or add --skip-bad to commit without them"
        )
