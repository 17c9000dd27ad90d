"""What each selection protocol publishes, against what its choice scores on fresh seeds.

A small search on the synthetic benchmark at the demo's settings (tiny preset, 16-channel U-Net,
3 steps x 2 classes, 200 iterations x 8 mixtures per step), for ContAV-Sep (λ_ins x λ_dist,
6 configurations) and LwF (λ_dist, 6 configurations), each configuration on 2 seeds. For every
protocol and method it prints the configuration chosen, the score it was chosen on (the mean
over the search's 2 seeds) and the chosen configuration's test SDR on 3 fresh seeds the search
never used, with the paired difference to the paper's defaults on the same fresh seeds:

- test selection (``select_on: test``): the search's own test numbers choose, and are published;
- validation selection (the default): the validation sets choose, the confirmation publishes;
- first tasks (``protocol: first_tasks``, k = 2): the search sees the first 2 of the 3 tasks.

Every number comes from real sweeps (``run_sweep``: local Ray, file storage, no MLflow). Test and
validation selection read the *same* search runs (one search logs both splits); a choice that
differs from another protocol's runs on the same fresh seeds (CPU runs are bit-reproducible, so
a configuration run twice on one seed gives the same numbers: each is run once).

    .venv/bin/python scripts/selection_protocols.py --out /tmp/protocols --strategies contavsep   # 43 min on 2 cores
    .venv/bin/python scripts/selection_protocols.py --out /tmp/check --quick --strategies lwf      # the script works (~20 min)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))

BASE = """\
base:
  preset: tiny
  data.uri: "{storage}/datasets/synth-default"
  data.num_steps: 3
  data.classes_per_step: 2
  train.iters_per_step: {iters}
  train.batch_size: 8
  model.unet_channels: 16
  eval.windows_per_clip: 4
  eval.pairs_per_clip: 1
  eval.examples: 0
"""
STRATEGIES = {
    "contavsep": {"strategy.lambda_ins": [0.03, 0.1, 0.3], "strategy.lambda_dist": [0.3, 1.0]},
    "lwf": {"strategy.lambda_dist": [0.03, 0.1, 0.3, 1.0, 3.0, 10.0]},
}
DEFAULTS = {
    "contavsep": {"strategy.lambda_ins": 0.1, "strategy.lambda_dist": 0.3},
    "lwf": {"strategy.lambda_dist": 0.3},
}
SEARCH_SEEDS, FRESH_SEEDS = 2, 3
TAIL = """\
scheduler: {type: fifo}
sampler: {type: grid, seed: 0}
resources: {workers: 1, cpus: 0.9, gpus: 0, driver_cpus: 0.1}
max_failures: 1
"""


def _strategy_block(strategy: str, values: dict[str, Any]) -> str:
    lines = [f"strategies:\n  {strategy}:\n    memory.per_class: 1\n"]
    for key, v in values.items():
        lines.append(f"    {key}: {{choice: {json.dumps(v)}}}\n" if isinstance(v, list) else f"    {key}: {v}\n")
    return "".join(lines)


ITERS = 200  # the demo's (--quick: 3)


def space_text(name: str, strategy: str, values: dict[str, Any], extra: str) -> str:
    return f"name: {name}\n" + BASE.replace("{iters}", str(ITERS)) + _strategy_block(strategy, values) + extra + TAIL


def _sweep(text: str, name: str, storage_uri: str) -> Any:
    from contavsep_platform.spaces import parse_space
    from contavsep_platform.sweep import run_sweep

    space = parse_space(text, source=f"{name}.yaml", storage_uri=storage_uri)
    started = time.perf_counter()
    outcome = run_sweep(space, storage_uri=storage_uri, name=name, verbose=0)
    if outcome.interrupted or outcome.errored:
        raise SystemExit(f"sweep {name} did not complete: {[r.error for r in outcome.errored]}")
    print(f"  sweep {name}: {len(outcome.trials)} trials in {time.perf_counter() - started:.0f} s", flush=True)
    return space, outcome


def _fresh(strategy: str, params: dict[str, Any], name: str, storage_uri: str) -> dict[str, float]:
    """Test SDR of one fixed configuration on the fresh seeds (those a confirmation uses)."""
    extra = f"repeats: {{seeds: {FRESH_SEEDS}, first_seed: {SEARCH_SEEDS}}}\n"
    _, outcome = _sweep(space_text(name, strategy, params, extra), name, storage_uri)
    return {r.repeat: r.metrics["sdr"] for r in outcome.trials}


def main(argv: list[str] | None = None) -> int:
    global ITERS
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for storage, Ray's state and results.json")
    parser.add_argument("--strategies", default="contavsep,lwf")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a check of the script, not a measurement: 3 iterations per step, 2 values per key",
    )
    args = parser.parse_args(argv)
    if args.quick:
        ITERS = 3
        for grid in STRATEGIES.values():
            for k in grid:
                grid[k] = sorted(
                    {*grid[k][:2], *[v for d in DEFAULTS.values() for key, v in d.items() if key == k and v in grid[k]]}
                )
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("CONTAVSEP_HOME", str(out / "home"))
    storage_uri = f"file://{out}/storage"

    from contavsep.data.synthetic.synth import SynthConfig, build_synthetic
    from contavsep_platform.comparison import paired_difference, t_interval
    from contavsep_platform.spaces import STRATEGY_KEY, parse_space
    from contavsep_platform.sweep import comparison_of, connect_ray

    data = f"{storage_uri}/datasets/synth-default"
    if not (out / "storage" / "datasets" / "synth-default" / "manifest.json").exists():
        build_synthetic(data, SynthConfig())
    connect_ray(None, {"CONTAVSEP_HOME": os.environ["CONTAVSEP_HOME"]})
    stamp = time.strftime("%H%M%S")
    results: dict[str, Any] = {}
    fresh: dict[tuple[str, str], dict[str, float]] = {}  # (strategy, params json) -> repeat -> test SDR

    def key(strategy: str, params: dict[str, Any]) -> tuple[str, str]:
        return strategy, json.dumps({k: params[k] for k in sorted(params) if k != STRATEGY_KEY})

    for strategy in args.strategies.split(","):
        grid = STRATEGIES[strategy]
        print(
            f"{strategy}: {math.prod(len(v) for v in grid.values())} configurations x {SEARCH_SEEDS} seeds", flush=True
        )
        confirm = f"repeats: {{seeds: {SEARCH_SEEDS}}}\nconfirm: {{seeds: {FRESH_SEEDS}}}\n"
        full_space, full = _sweep(
            space_text(f"full-{strategy}-{stamp}", strategy, grid, confirm), f"full-{strategy}-{stamp}", storage_uri
        )
        first_space, first = _sweep(
            space_text(
                f"first-{strategy}-{stamp}", strategy, grid, confirm + "protocol: {type: first_tasks, tasks: 2}\n"
            ),
            f"first-{strategy}-{stamp}",
            storage_uri,
        )
        rows = {}
        for protocol, outcome in (("validation", full), ("first tasks", first)):
            (row,) = outcome.comparison.rows
            params = dict(row.configuration.params)
            fresh[key(strategy, params)] = row.configuration.per_repeat("sdr")
            rows[protocol] = (params, row.chosen_on.mean)
        # test selection: the same search runs, chosen on their test means
        test_space = parse_space(
            space_text("t", strategy, grid, f"repeats: {{seeds: {SEARCH_SEEDS}}}\nselect_on: test\n"),
            storage_uri=storage_uri,
        )
        search_rows = [r for r in full.trials if r.stage == "search"]
        (row,) = comparison_of(search_rows, test_space).rows
        rows["test"] = (dict(row.configuration.params), row.estimates["sdr"].mean)
        for params in (rows["test"][0], DEFAULTS[strategy]):
            if key(strategy, params) not in fresh:
                name = f"fresh-{strategy}-{len(fresh)}-{stamp}"
                fresh[key(strategy, params)] = _fresh(strategy, params, name, storage_uri)
        base = fresh[key(strategy, DEFAULTS[strategy])]
        results[strategy] = {}
        for protocol in ("test", "validation", "first tasks"):
            params, chosen_on = rows[protocol]
            confirmed = fresh[key(strategy, params)]
            e, d = t_interval(confirmed.values()), paired_difference(confirmed, base)
            results[strategy][protocol] = {
                "params": params,
                "chosen_on": chosen_on,
                "confirmed": [e.mean, e.low, e.high, e.n],
                "vs_defaults": [d.mean, d.low, d.high, d.n],
                "fresh": confirmed,
            }
        e = t_interval(base.values())
        results[strategy]["defaults"] = {
            "params": DEFAULTS[strategy],
            "confirmed": [e.mean, e.low, e.high, e.n],
            "fresh": base,
        }
        (out / "results.json").write_text(json.dumps(results, indent=1))

    split = {
        "test": "test, search seeds",
        "validation": "validation, search seeds",
        "first tasks": "validation, first 2 tasks",
    }
    print(
        "\n| method | protocol | chosen configuration | score it was chosen on (2 seeds) | confirmed test SDR, 3 fresh seeds"
        " (mean ± 95 % CI) | gap | Δ vs paper defaults, paired [95 % CI] |"
    )
    print("|---|---|---|---|---|---|---|")
    for strategy, by in results.items():
        for protocol in ("test", "validation", "first tasks"):
            r = by[protocol]
            mean, low, high, _ = r["confirmed"]
            dm, dl, dh, _ = r["vs_defaults"]
            params = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in r["params"].items())
            print(
                f"| {strategy} | {protocol} | {params} | {r['chosen_on']:.2f} ({split[protocol]}) | {mean:.2f} ± {(high - low) / 2:.2f}"
                f" | {mean - r['chosen_on']:+.2f} | {dm:+.2f} [{dl:+.2f}, {dh:+.2f}] |"
            )
        mean, low, high, _ = by["defaults"]["confirmed"]
        print(
            f"| {strategy} | paper defaults (no search) | {by['defaults']['params']} | - | {mean:.2f} ± {(high - low) / 2:.2f} | - | - |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
