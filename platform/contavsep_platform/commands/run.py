"""`contavsep run`: one whole task sequence in this process, without Ray (and `contavsep strategies`)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import traceback
from pathlib import Path

from contavsep.config import PRESETS, flat, make_config, parse_overrides, to_yaml
from contavsep_platform.errors import USER_ERRORS, UserError

EXIT_FAILED = 1  # the run itself failed (traceback in <out>/error.txt)
EXIT_INTERRUPTED = 130  # Ctrl-C; --resume with the last step checkpoint continues it


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="train and evaluate one incremental task sequence locally (no Ray)")
    p.add_argument("--data", required=True, help="dataset URI (file:///abs/path or s3://bucket/prefix)")
    p.add_argument(
        "--preset", default=None, choices=sorted(PRESETS), help="size preset (default: paper, or the --config file's)"
    )
    p.add_argument("--strategy", default=None, help="strategy name (see `contavsep strategies`)")
    p.add_argument("--config", dest="yaml_path", default=None, help="YAML overlay of nested or dotted keys")
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="dotted override (repeatable)"
    )
    p.add_argument(
        "--out",
        default=None,
        help="output directory for results.json and step checkpoints (default: ./runs/<strategy>-<time>)",
    )
    p.add_argument(
        "--resume", default=None, metavar="CHECKPOINT_DIR", help="continue after the step of this checkpoint"
    )
    p.add_argument("--no-checkpoints", action="store_true", help="do not write step checkpoints")
    p.add_argument("--quiet", action="store_true", help="only print the final table")
    p.set_defaults(func=run)

    s = sub.add_parser("strategies", help="list the continual-learning strategies and their hyperparameters")
    s.set_defaults(func=list_strategies)


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows
    )


def _fmt(x: object) -> str:
    return "-" if x is None else f"{x:.2f}" if isinstance(x, float) else str(x)


def step_table(summary: dict) -> str:
    """Per-step table: SDR/SIR/SAR over all seen classes, old / new SDR, mixture SDR, skipped."""
    rows = [["step", "SDR", "SIR", "SAR", "SDR old", "SDR new", "SDR mix", "sources", "skipped"]]
    for s in summary["steps"]:
        rows.append(
            [str(s["step"] + 1)]
            + [_fmt(s.get(k)) for k in ("sdr", "sir", "sar", "sdr_old", "sdr_new", "sdr_mix", "sources", "skipped")]
        )
    return _table(rows)


class _ConsoleReporter:
    """Writes each step's checkpoint and results.json (atomically) as the run goes."""

    def __init__(self, out: Path, cfg, checkpoints: bool):
        self.out, self.cfg, self.checkpoints = out, cfg, checkpoints
        self.steps: list[dict] = []

    def report(self, result, save_checkpoint) -> None:
        if not self.steps:  # the first step ran: only now is there something to keep
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.yaml").write_text(to_yaml(self.cfg))
        self.steps.append(result.metrics)
        if self.checkpoints:
            save_checkpoint(self.out / "checkpoints" / f"step={result.step}")
        doc = {"config": flat(self.cfg), "steps": self.steps, "summary": result.summary, "complete": result.is_last}
        tmp = self.out / "results.json.tmp"
        tmp.write_text(json.dumps(doc, indent=2))
        tmp.replace(self.out / "results.json")


def _check_out(out: Path, resuming: bool) -> None:
    """Refuse, before any training, an output folder that cannot be written or that holds
    another run's results (they would be overwritten step by step)."""
    if (out / "results.json").exists() and not resuming:
        raise UserError(
            f"--out {out} already holds a run (results.json): choose another --out, or continue that run"
            f" with --resume {out}/checkpoints/step=N"
        )
    existing = next(p for p in (out, *out.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"--out {out}: {existing} is not a writable folder")


def run(args: argparse.Namespace) -> int:
    from contavsep.data.format.reader import node_cache_dir, open_dataset
    from contavsep.engine import run_sequence

    overrides = parse_overrides(args.overrides)
    if args.strategy:
        overrides["strategy.name"] = args.strategy
    if args.preset:
        overrides["preset"] = args.preset
    overrides["data.uri"] = args.data
    cfg = make_config("paper", overrides, args.yaml_path)
    if not args.quiet:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)
    if cfg.model.weights:  # a missing file fails here, not after the dataset and model are built
        from contavsep.models.weights_file import weights_path

        weights_path(cfg.model.weights)
    table = open_dataset(
        cfg.data.uri, cache_dir=node_cache_dir(cfg.data.cache_dir, "local")
    )  # fails before anything is written
    if args.resume:  # a checkpoint of another config or dataset fails here, naming the keys that differ
        from contavsep.checkpoint import check_resumable, load_checkpoint

        check_resumable(load_checkpoint(args.resume), cfg, str(table.manifest.get("content_hash", "")), args.resume)
    out = Path(args.out or f"runs/{cfg.strategy.name}-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    _check_out(out, resuming=bool(args.resume))
    reporter = _ConsoleReporter(out, cfg, checkpoints=not args.no_checkpoints)
    started = time.perf_counter()
    try:
        summary = run_sequence(cfg, table, reporter=reporter, resume_from=args.resume)
    except USER_ERRORS:
        raise  # a wrong --resume checkpoint or config: the CLI's one line, exit 2
    except KeyboardInterrupt:
        print(f"contavsep run: interrupted{_resume_hint(out, args)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception:
        # A failure of the run itself (not of its input): the traceback goes to a file, one line here.
        out.mkdir(parents=True, exist_ok=True)  # a run that failed before its first step made no folder yet
        error_log = out / "error.txt"
        error_log.write_text(traceback.format_exc())
        line = traceback.format_exc().strip().splitlines()[-1]
        print(
            f"contavsep run: error: the run failed: {line}; log: {error_log}{_resume_hint(out, args)}", file=sys.stderr
        )
        return EXIT_FAILED
    wall = time.perf_counter() - started
    print(step_table(summary))
    f = summary["forgetting"]
    print(
        f"final SDR {_fmt(summary['final']['sdr'])}  SIR {_fmt(summary['final']['sir'])}  SAR {_fmt(summary['final']['sar'])}  "
        f"forgetting {_fmt(f['sdr'])}  BWT {_fmt(summary['bwt']['sdr'])}  avg incremental SDR {_fmt(summary['average_incremental']['sdr'])}"
        f"  wall {wall:.0f}s"
    )
    print(f"results: {out / 'results.json'}")
    return 0


def _resume_hint(out: Path, args: argparse.Namespace) -> str:
    """ "; continue it with ..." naming the last step checkpoint, if the run wrote one."""
    steps = sorted(
        (p for p in (out / "checkpoints").glob("step=*") if p.name.split("=")[1].isdigit()),
        key=lambda p: int(p.name.split("=")[1]),
    )
    if not steps:
        return ""
    return f"; continue it: the same command with --out {out} --resume {steps[-1]}"


def list_strategies(args: argparse.Namespace) -> int:
    from contavsep.registry import STRATEGIES
    from contavsep.strategies.base import params_table

    for name in STRATEGIES.names():
        cls = STRATEGIES.get(name)
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        print(f"{name:10s} {doc}")
        for key, default in params_table(cls):
            print(f"{'':10s}   {key} = {default}")
    return 0
