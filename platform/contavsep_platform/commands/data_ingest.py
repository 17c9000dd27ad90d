"""`contavsep data ingest`: real videos (MUSIC-21 layout) -> clip dataset on file:// or s3://.

    contavsep data ingest --layout music21 --root DIR --out URI [--splits music21-contavsep]
                          [--extractors pretrained|random-tiny] [--max-seconds S] [--skip-bad]

The `data` command group (``commands/data.py``) calls :func:`register` with its subparsers.
Exit status: 0 committed with no problem; 1 some files failed (listed; committed only with
--skip-bad); 2 bad input or settings (one line, nothing committed); 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from contavsep_platform.errors import UserError

_DEFAULT_IDS = ("google/owlv2-base-patch16-ensemble", "openai/clip-vit-base-patch32", "MCG-NJU/videomae-base")


def _ratios(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not three comma-separated numbers, e.g. 0.8,0.1,0.1") from None
    if len(values) != 3 or any(v < 0 for v in values) or sum(values) <= 0:
        raise argparse.ArgumentTypeError(
            f"'{text}' must be three non-negative numbers train,val,test, e.g. 0.8,0.1,0.1"
        )
    return values


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``ingest`` to the ``contavsep data`` subcommands (imports nothing heavy: `--help` stays fast)."""
    p = sub.add_parser(
        "ingest",
        help="ingest <class>/<clip>.mp4 videos (MUSIC-21, AVE, VGGSound layout) into a dataset",
        description="Decode videos (audio 11025 Hz mono; frames at 1 fps), detect the instrument with OWLv2, "
        "encode crops with CLIP and motion with VideoMAE, and write an Arrow dataset. Resumable: "
        "rerunning the same command skips clips already written.",
    )
    p.add_argument(
        "--layout", default="music21", help="folder layout of --root (supported: music21 = <class>/<clip>.mp4)"
    )
    p.add_argument("--root", required=True, help="dataset root folder holding one folder per class")
    p.add_argument("--out", required=True, help="output dataset URI: file:///abs/path or s3://bucket/prefix")
    p.add_argument(
        "--classes",
        default=None,
        help="comma-separated class list in task order (default: the split lists' order, else sorted folders)",
    )
    p.add_argument(
        "--splits",
        default=None,
        metavar="FILE",
        help="split-list JSON ({class_order, splits: {train|val|test: {class: [clip ids]}}}),"
        " or 'music21-contavsep' for the paper's packaged MUSIC-21 lists",
    )
    p.add_argument(
        "--split-ratios",
        type=_ratios,
        default=(0.8, 0.1, 0.1),
        metavar="TRAIN,VAL,TEST",
        help="per-class split ratios when no --splits is given (default 0.8,0.1,0.1)",
    )
    p.add_argument("--split-seed", type=int, default=0, help="seed of the ratio split (default 0)")
    p.add_argument(
        "--extractors",
        default="pretrained",
        help="pretrained (published checkpoints) | random-tiny (tiny random models: tests, offline trials)",
    )
    # Defaults live in contavsep.data.ingest.extractors (None here = theirs); the help repeats them so that
    # `--help` needs no torch import, and a test checks the two agree.
    p.add_argument("--detector-model", default=None, help=f"OWLv2 hub id or folder (default {_DEFAULT_IDS[0]})")
    p.add_argument("--image-model", default=None, help=f"CLIP hub id or folder (default {_DEFAULT_IDS[1]})")
    p.add_argument("--motion-model", default=None, help=f"VideoMAE hub id or folder (default {_DEFAULT_IDS[2]})")
    p.add_argument("--revision", default=None, help="hub revision of the three checkpoints (default: each repo's main)")
    p.add_argument(
        "--offline",
        action="store_true",
        help="load weights from the local Hugging Face cache only (also: HF_HUB_OFFLINE=1)",
    )
    p.add_argument("--seed", type=int, default=0, help="weight seed of --extractors random-tiny (default 0)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto: GPU when available)")
    p.add_argument(
        "--max-seconds",
        type=float,
        default=None,
        help="keep only the first S seconds of each video (default: whole track)",
    )
    p.add_argument(
        "--score-threshold",
        type=float,
        default=0.1,
        help="detector score below which the whole frame is encoded (default 0.1)",
    )
    p.add_argument(
        "--query-template",
        default="a photo of a {}",
        help="detector text query; {} = class name (default 'a photo of a {}')",
    )
    p.add_argument("--batch-frames", type=int, default=16, help="frames per detector forward pass (default 16)")
    p.add_argument("--group-clips", type=int, default=8, help="clips whose frames share forward passes (default 8)")
    p.add_argument("--decode-workers", type=int, default=2, help="decoding threads (default 2)")
    p.add_argument(
        "--part-rows", type=int, default=8, help="clips per Parquet part; also the resume granularity (default 8)"
    )
    p.add_argument(
        "--restart", action="store_true", help="discard the parts of an earlier unfinished run instead of resuming"
    )
    p.add_argument("--overwrite", action="store_true", help="replace a complete dataset at --out")
    p.add_argument(
        "--skip-bad",
        action="store_true",
        help="commit the dataset even if some files failed (they are listed; exit status stays 1)",
    )
    p.add_argument("--description", default="", help="free text stored in the manifest")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _positive(name: str, value: float | int | None, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if value is None or value <= 0:
        raise UserError(f"{name} must be > 0, got {value}")


def _check_writable(path: Path) -> None:
    """Refuse an output folder whose nearest existing ancestor this user cannot write."""
    from contavsep.storage import StorageError

    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise StorageError(f"cannot write {path}: {existing} is not a writable folder")


def run(args: argparse.Namespace) -> int:
    from contavsep.data.format.manifest import DatasetError
    from contavsep.data.ingest.extractors import (
        EXTRACTOR_KINDS,
        ExtractorLoadError,
        PretrainedModelIds,
        build_extractors,
    )
    from contavsep.data.ingest.pipeline import (
        IngestError,
        IngestSettings,
        check_layout,
        discover,
        ingest,
        iter_lines,
        open_writer,
    )
    from contavsep.data.ingest.splits import SplitListError, load_split_lists
    from contavsep.storage import StorageError, ensure_bucket, parse_uri

    _positive("--max-seconds", args.max_seconds, allow_none=True)
    for name in ("batch_frames", "group_clips", "decode_workers", "part_rows"):
        _positive("--" + name.replace("_", "-"), getattr(args, name))
    if args.extractors not in EXTRACTOR_KINDS:
        raise UserError(f"unknown --extractors '{args.extractors}'; choose one of: {', '.join(EXTRACTOR_KINDS)}")
    if args.extractors != "pretrained":  # flags that would silently do nothing
        given = [
            flag
            for flag, value in (
                ("--detector-model", args.detector_model),
                ("--image-model", args.image_model),
                ("--motion-model", args.motion_model),
                ("--revision", args.revision),
                ("--offline", args.offline),
            )
            if value
        ]
        if given:
            raise UserError(f"{given[0]} only applies to --extractors pretrained (got --extractors {args.extractors})")
    if "{}" not in args.query_template:
        raise UserError(f"--query-template must contain {{}} where the class name goes, got '{args.query_template}'")
    classes = None
    if args.classes is not None:
        classes = [c.strip() for c in args.classes.split(",") if c.strip()]
        if not classes:
            raise UserError("--classes is empty; give comma-separated class names, e.g. violin,flute")
    try:
        check_layout(args.layout)
        parse_uri(args.out)
        split_lists = load_split_lists(args.splits) if args.splits else None
        found = discover(
            args.layout,
            args.root,
            classes=classes,
            split_lists=split_lists,
            split_ratios=args.split_ratios,
            split_seed=args.split_seed,
        )
    except (IngestError, SplitListError, StorageError) as exc:
        raise UserError(str(exc)) from None
    per_split = {s: sum(1 for i in found.items if i.split == s) for s in ("train", "val", "test")}
    print(
        f"found {len(found.items)} video(s) in {len(found.classes)} classes under {args.root}: "
        + ", ".join(f"{k} {v}" for k, v in per_split.items())
        + (f"; {len(found.problems)} problem(s) (listed at the end)" if found.problems else "")
    )
    for problem in found.problems:
        print(f"problem: {problem}", file=sys.stderr)

    try:
        # Cheap before the models load: a refused key or unreachable endpoint fails in seconds.
        # A local folder is only checked (created by the writer): a refusal below leaves nothing.
        out = parse_uri(args.out)
        if out.scheme == "s3":
            ensure_bucket(args.out)
        else:
            _check_writable(Path(out.path))
    except StorageError as exc:
        raise UserError(f"{exc}; nothing was written") from None

    try:
        extractors = build_extractors(
            args.extractors,
            ids=PretrainedModelIds(
                detector=args.detector_model or PretrainedModelIds.detector,
                image=args.image_model or PretrainedModelIds.image,
                motion=args.motion_model or PretrainedModelIds.motion,
                revision=args.revision,
            ),
            device=args.device,
            local_files_only=args.offline,
            seed=args.seed,
            batch_frames=args.batch_frames,
            batch_clips=args.group_clips,
        )
    except ExtractorLoadError as exc:  # missing weights, wrong model type, unavailable --device
        raise UserError(str(exc)) from None
    print(f"extractors: {args.extractors} on {extractors.device}")

    settings = IngestSettings(
        max_seconds=args.max_seconds,
        query_template=args.query_template,
        score_threshold=args.score_threshold,
        group_clips=args.group_clips,
        decode_workers=args.decode_workers,
    )
    try:
        writer = open_writer(
            found,
            args.out,
            extractors,
            settings,
            resume=not args.restart,
            overwrite=args.overwrite,
            part_rows=args.part_rows,
            description=args.description,
        )
    except (StorageError, DatasetError) as exc:
        raise UserError(str(exc)) from None
    resumed = len(writer.existing_clip_ids())
    if resumed:
        print(f"resuming: {resumed} clip(s) already written at {args.out} are skipped")
    try:
        report = ingest(
            found, writer, extractors, settings, root=args.root, skip_bad=args.skip_bad, progress=not args.no_progress
        )
    except (StorageError, DatasetError) as exc:
        raise UserError(f"{exc}; nothing was committed (rerun the same command to resume)") from None
    except KeyboardInterrupt:
        print(
            f"contavsep data ingest: interrupted; nothing was committed at {args.out}. Rerun the same command to"
            f" resume (clips in parts already written are skipped).",
            file=sys.stderr,
        )
        return 130
    for line in iter_lines(report):
        print(line)
    return 0 if report.ok else 1
