"""`contavsep data`: build and inspect clip datasets.

Subcommands: ``synth`` (the synthetic MUSIC-21 stand-in) and ``info`` (manifest and counts).
Other subcommands register themselves from their own modules: ``ingest`` lives in
``contavsep_platform/commands/data_ingest.py`` and is added here when that module exists.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time

from contavsep_platform.errors import UserError

# Modules that add subcommands to `contavsep data` through register(data_subparsers).
SUBCOMMAND_MODULES = ["contavsep_platform.commands.data_ingest"]


def _clips_per_class(text: str) -> tuple[int, int, int]:
    parts = text.split(",")
    try:
        counts = tuple(int(p) for p in parts)
    except ValueError:
        counts = ()
    if len(counts) != 3:
        raise argparse.ArgumentTypeError(f"expected three integers train,val,test (e.g. 24,5,5), got {text!r}")
    return counts


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="build and inspect clip datasets (synthetic benchmark, info)")
    data_sub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    data_sub.required = True

    s = data_sub.add_parser(
        "synth",
        help="build the synthetic MUSIC-21 stand-in (additive synthesis; simulated visual features)",
        description="Build the synthetic benchmark: MUSIC-21 instrument classes with distinct timbres, random "
        "music per clip, simulated object/motion features. Deterministic by --seed.",
    )
    s.add_argument("--out", required=True, metavar="URI", help="dataset URI: file:///abs/path or s3://bucket/prefix")
    s.add_argument("--classes", type=int, default=20, help="number of instruments, paper order (default 20, max 21)")
    s.add_argument(
        "--clips-per-class",
        type=_clips_per_class,
        default=(24, 5, 5),
        metavar="TRAIN,VAL,TEST",
        help="clips per class and split (default 24,5,5)",
    )
    s.add_argument("--seconds", type=float, default=6.5, help="clip length in seconds (default 6.5 >= 65535 samples)")
    s.add_argument("--seed", type=int, default=0, help="seed of all content (default 0)")
    s.add_argument(
        "--renderer",
        default="additive",
        choices=["additive", "soundfont"],
        help="additive (default, needs nothing) or soundfont (needs fluidsynth + a GM soundfont)",
    )
    s.add_argument("--workers", type=int, default=None, help="render processes (default: usable CPUs, at most 4)")
    s.add_argument("--overwrite", action="store_true", help="replace a complete dataset already at --out")
    s.set_defaults(func=run_synth)

    i = data_sub.add_parser("info", help="print a dataset's manifest summary and per-split, per-class counts")
    i.add_argument("uri", metavar="URI", help="dataset URI: file:///abs/path or s3://bucket/prefix")
    i.add_argument("--json", action="store_true", help="print the whole manifest as JSON")
    i.set_defaults(func=run_info)

    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # that subcommand has not been written yet
                continue
            raise
        module.register(data_sub)


def run_synth(args: argparse.Namespace) -> int:
    from contavsep.data.synthetic.synth import (
        MIN_PAPER_SAMPLES,
        SynthConfig,
        build_synthetic,
        default_workers,
    )

    cfg = SynthConfig(
        classes=args.classes,
        clips_per_class=tuple(args.clips_per_class),
        seconds=args.seconds,
        seed=args.seed,
        renderer=args.renderer,
    )
    if args.seed < 0:
        raise UserError(f"--seed must be >= 0, got {args.seed}")
    workers = args.workers if args.workers is not None else default_workers()
    if workers < 1:
        raise UserError(f"--workers must be >= 1, got {workers}")
    if cfg.num_samples < MIN_PAPER_SAMPLES:
        print(
            f"note: clips have {cfg.num_samples} samples (< {MIN_PAPER_SAMPLES}): only presets with shorter "
            f"audio.clip_samples (small, tiny) can crop them",
            file=sys.stderr,
        )
    total = cfg.classes * sum(cfg.clips_per_class)
    step = max(total // 10, 1)

    def progress(done: int, total_: int) -> None:
        if done % step == 0 or done == total_:
            print(f"  {done}/{total_} clips", file=sys.stderr, flush=True)

    start = time.perf_counter()
    # Errors of the library's family (a storage, dataset or renderer problem) reach the CLI's one line.
    manifest = build_synthetic(args.out, cfg, overwrite=args.overwrite, workers=workers, progress=progress)
    elapsed = time.perf_counter() - start
    size = sum(p["bytes"] for p in manifest["parts"])
    totals = manifest["totals"]
    print(
        f"wrote {args.out}: {len(manifest['classes'])} classes, train {totals['train']} / val {totals['val']} / "
        f"test {totals['test']} clips, {size / 1e6:.1f} MB in {len(manifest['parts'])} parts, "
        f"content hash {manifest['content_hash'][:16]}, {elapsed:.1f} s"
    )
    return 0


def _extractor_line(name: str, entry: object) -> str:
    # Not every entry describes a model: `data ingest` also records e.g. "kind": "random-tiny".
    if not isinstance(entry, dict):
        return f"{name}: {entry}"
    pretrained = "pretrained" if entry.get("pretrained") else "not pretrained"
    revision = f"@{entry['revision']}" if entry.get("revision") else ""
    simulated = ", simulated" if entry.get("simulated") else ""
    detector = entry.get("detector")
    crops = (
        f", crops by {_extractor_line('detector', detector).split(': ', 1)[1]}" if isinstance(detector, dict) else ""
    )
    return f"{name}: {entry.get('name')}{revision} ({pretrained}{simulated}{crops})"


def run_info(args: argparse.Namespace) -> int:
    from contavsep.data.format.manifest import read_manifest
    from contavsep.data.format.schema import SPLITS

    manifest = read_manifest(args.uri)
    if args.json:
        print(json.dumps(manifest, indent=1))
        return 0
    audio = manifest["audio"]
    dims = manifest["feature_dims"]
    size = sum(p["bytes"] for p in manifest["parts"])
    print(f"dataset      {args.uri}")
    if manifest.get("description"):
        print(f"description  {manifest['description']}")
    print(
        f"schema       version {manifest['schema_version']} ({manifest['format']}), created {manifest.get('created_at', '?')}"
    )
    print(f"content hash {manifest['content_hash']}")
    audio_extra = f", {audio['clip_seconds']} s clips" if "clip_seconds" in audio else ""
    print(f"audio        {audio['sample_rate']} Hz {audio.get('dtype', 'int16')}{audio_extra}")
    print(
        f"features     object {dims['object_dim']}-d per frame, motion {dims['motion_tokens']} x {dims['motion_dim']}"
    )
    print("extractors   " + "; ".join(_extractor_line(k, v) for k, v in manifest["extractors"].items()))
    print(f"parts        {len(manifest['parts'])} Parquet parts, {size / 1e6:.1f} MB")
    width = max([len(c) for c in manifest["classes"]] + [5])
    print()
    print(f"{'id':>3}  {'class':<{width}}  " + "  ".join(f"{s:>5}" for s in SPLITS))
    for class_id, name in enumerate(manifest["classes"]):
        counts = "  ".join(f"{manifest['counts'][s].get(name, 0):>5}" for s in SPLITS)
        print(f"{class_id:>3}  {name:<{width}}  {counts}")
    totals = "  ".join(f"{sum(manifest['counts'][s].values()):>5}" for s in SPLITS)
    print(f"{'':>3}  {'total':<{width}}  {totals}")
    return 0
