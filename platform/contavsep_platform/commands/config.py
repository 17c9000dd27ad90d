"""`contavsep config`: print the resolved config or the list of valid dotted keys."""

from __future__ import annotations

import argparse

from contavsep.config import PRESETS, flat, make_config, parse_overrides, to_yaml


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="print the resolved config (preset + YAML + --set) or the valid keys")
    p.add_argument("--preset", default="paper", choices=sorted(PRESETS), help="size preset (default: paper)")
    p.add_argument("--config", dest="yaml_path", default=None, help="YAML overlay of nested or dotted keys")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted override, e.g. strategy.lambda_ins=0.2 (repeatable)")
    p.add_argument("--keys", action="store_true", help="list every dotted key with its resolved value")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = make_config(args.preset, parse_overrides(args.overrides), args.yaml_path)
    if args.keys:
        for key, value in flat(cfg).items():
            print(f"{key} = {value!r}")
    else:
        print(to_yaml(cfg), end="")
    return 0
