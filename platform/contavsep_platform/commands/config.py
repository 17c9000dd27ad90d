"""`contavsep config`: print the resolved config, the list of valid dotted keys, or its budget."""

from __future__ import annotations

import argparse

from contavsep.config import (
    PRESETS,
    Config,
    ConfigError,
    flat,
    make_config,
    parse_overrides,
    to_yaml,
)

MUSIC21 = "music21"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="print the resolved config (preset + YAML + --set), the valid keys or the budget")
    p.add_argument("--preset", default="paper", choices=sorted(PRESETS), help="size and budget preset (default: paper)")
    p.add_argument("--config", dest="yaml_path", default=None, help="YAML overlay of nested or dotted keys")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dotted override, e.g. strategy.lambda_ins=0.2 (repeatable)",
    )
    p.add_argument("--keys", action="store_true", help="list every dotted key with its resolved value")
    p.add_argument(
        "--budget",
        action="store_true",
        help="print the iterations and lr drops of every step and the share of the paper's training compute",
    )
    p.add_argument(
        "--train-clips",
        default=MUSIC21,
        metavar="music21|N|N1,N2,...",
        help="training clips per class for --budget: the packaged MUSIC-21 lists (default), N for every"
        " class (the synthetic benchmark: 24), or one count per class in the dataset's class order",
    )
    p.set_defaults(func=run)


def train_clips_per_class(spec: str, cfg: Config) -> list[int]:
    """The --train-clips value as one training-clip count per dataset class."""
    if spec == MUSIC21:
        from contavsep.data.ingest.splits import music21_contavsep_splits

        lists = music21_contavsep_splits()
        return [len(lists.clips["train"].get(c, ())) for c in lists.class_order]
    try:
        counts = [int(part) for part in spec.split(",")]
    except ValueError:
        raise ConfigError(f"--train-clips must be '{MUSIC21}', N or N1,N2,... (whole numbers), got {spec!r}") from None
    if any(n < 0 for n in counts):
        raise ConfigError(f"--train-clips counts must be >= 0, got {spec!r}")
    if len(counts) == 1:
        return counts * (cfg.data.num_steps * cfg.data.classes_per_step)
    return counts


def run(args: argparse.Namespace) -> int:
    cfg = make_config(args.preset, parse_overrides(args.overrides), args.yaml_path)
    if args.budget:
        from contavsep.budget import describe, sequence_budget

        budget = sequence_budget(cfg, train_clips_per_class(args.train_clips, cfg))
        print(
            f"preset {cfg.preset}, strategy {cfg.strategy.name}, memory.per_class {cfg.memory.per_class},"
            f" batch {cfg.train.batch_size}, train clips: {args.train_clips}"
        )
        print(describe(budget))
    elif args.keys:
        for key, value in flat(cfg).items():
            print(f"{key} = {value!r}")
    else:
        print(to_yaml(cfg), end="")
    return 0
