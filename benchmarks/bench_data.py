"""Benchmark of the data path: `python -m benchmarks.bench_data`.

Measures, on this machine:

1. build time and size of the default synthetic dataset (20 classes x (24, 5, 5) clips of 6.5 s);
2. how well its classes separate by spectrum (nearest centroid on mean log spectra, test split);
3. memory of two processes reading the same dataset through the node-local cache at the same
   time (RSS, its anonymous and file-backed parts, and PSS, which splits shared pages between
   the processes that map them), next to one process that loads the Parquet parts into its own
   memory instead: the cache should cost each trial about nothing private, and the page-cache
   copy is shared.

Results are printed and, with ``--json PATH``, written as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

import numpy as np


def _memory_kib() -> dict[str, int]:
    """This process's RSS (total, anonymous, file-backed) and PSS, in KiB (Linux /proc)."""
    out: dict[str, int] = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                out[key] = int(value.split()[0])
    try:
        with open("/proc/self/smaps_rollup") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("Pss", "Pss_Anon", "Pss_File"):
                    out[key] = int(value.split()[0])
    except FileNotFoundError:  # kernels before 4.14
        pass
    return out


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the build's worker processes)."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _touch_everything(table: Any) -> float:
    """Read every byte of audio and features once (faults all pages in); returns a checksum."""
    total = 0.0
    for row in range(len(table)):
        total += float(table.audio(row).sum(dtype=np.int64))
        total += float(table.object_features(row).sum()) + float(table.motion_features(row).sum())
    return total


def _reader(uri: str, cache_dir: str, mode: str) -> None:
    """Child process: open the dataset, read all of it, report memory when the parent says so."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from contavsep import storage
    from contavsep.data.format.manifest import read_manifest
    from contavsep.data.format.reader import open_dataset

    pa.array([1])  # pyarrow's lazy imports happen here, not inside the measured part
    before = _memory_kib()
    start = time.perf_counter()
    if mode == "cache":
        table = open_dataset(uri, cache_dir=cache_dir)
        built = table.built
        checksum = _touch_everything(table)
    else:  # "copy": the alternative without the cache, every part decoded into this process's memory
        manifest = read_manifest(uri)
        tables = [
            pq.read_table(pa.BufferReader(storage.read_bytes(storage.join(uri, p["path"])))) for p in manifest["parts"]
        ]
        copy = pa.concat_tables(tables).combine_chunks()
        built = False
        checksum = float(sum(np.asarray(c.flatten()).sum(dtype=np.int64) for c in copy.column("audio").chunks))
    seconds = time.perf_counter() - start
    print("ready", flush=True)
    sys.stdin.readline()  # the parent measures all readers while they all hold the data
    print(
        json.dumps(
            {
                "mode": mode,
                "built_cache": built,
                "open_and_read_s": round(seconds, 2),
                "before_open_kib": before,
                "kib": _memory_kib(),
                "checksum": checksum,
            }
        ),
        flush=True,
    )


def _run_readers(uri: str, cache_dir: str, modes: list[str]) -> list[dict[str, Any]]:
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "benchmarks.bench_data", "--reader", mode, "--uri", uri, "--cache-dir", cache_dir],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for mode in modes
    ]
    pipes: list[tuple[IO[str], IO[str]]] = []
    for p in procs:
        assert p.stdin is not None and p.stdout is not None  # both asked for as PIPE above
        pipes.append((p.stdin, p.stdout))
    for _, stdout in pipes:
        line = stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"reader failed: {line!r} {stdout.read()}")
    for stdin, _ in pipes:
        stdin.write("go\n")
        stdin.flush()
    results = [json.loads(stdout.readline()) for _, stdout in pipes]
    for p in procs:
        p.wait(timeout=120)
    return results


def _spectral_accuracy(uri: str, cache_dir: str) -> float:
    """Nearest-centroid accuracy of the test split on mean log spectra (centroids from train)."""
    from contavsep.data.format.reader import open_dataset

    table = open_dataset(uri, cache_dir=cache_dir)

    def feature(row: int) -> np.ndarray:
        x = table.audio(row).astype(np.float64) / 32768.0
        frames = np.lib.stride_tricks.sliding_window_view(x, 512)[::256] * np.hanning(512)
        power = (np.abs(np.fft.rfft(frames, axis=1)) ** 2).mean(axis=0)
        smooth = np.convolve(np.log(power + 1e-10), np.ones(9) / 9, mode="same")
        return smooth - smooth.mean()

    train = table.rows_by_class("train")
    centroids = np.array([np.mean([feature(r) for r in train[c]], axis=0) for c in range(len(table.classes))])
    test = table.rows("test")
    hits = [int(np.argmin(((centroids - feature(r)) ** 2).sum(axis=1))) == table.class_id(r) for r in test]
    return float(np.mean(hits))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_data", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", default=None, help="dataset URI to build (default: a temp file:// folder, removed after)"
    )
    parser.add_argument("--workers", type=int, default=None, help="render processes (default: usable CPUs, at most 4)")
    parser.add_argument("--json", dest="json_path", default=None, help="also write the results to this JSON file")
    parser.add_argument("--reader", choices=["cache", "copy"], help=argparse.SUPPRESS)
    parser.add_argument("--uri", help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.reader:
        _reader(args.uri, args.cache_dir, args.reader)
        return 0

    from contavsep.data.synthetic.synth import SynthConfig, build_synthetic, default_workers

    workers = args.workers or default_workers()
    with tempfile.TemporaryDirectory(prefix="contavsep-bench-data-") as tmp:
        uri = args.out or f"file://{tmp}/synthetic"
        cfg = SynthConfig()
        load_before = os.getloadavg()
        start, cpu_start = time.perf_counter(), _cpu_seconds()
        manifest = build_synthetic(uri, cfg, workers=workers, overwrite=True)
        build_s, build_cpu_s = time.perf_counter() - start, _cpu_seconds() - cpu_start
        load_after = os.getloadavg()
        size = sum(p["bytes"] for p in manifest["parts"])
        cache_dir = f"{tmp}/cache"
        readers = _run_readers(uri, cache_dir, ["cache", "cache"])
        cache_mib = round(next(Path(cache_dir, "datasets").glob("*.arrow")).stat().st_size / 2**20, 1)
        copy_reader = _run_readers(uri, cache_dir, ["copy"])[0]
        accuracy = _spectral_accuracy(uri, cache_dir)
        if len({r["checksum"] for r in readers}) != 1:
            raise RuntimeError("the two readers saw different data")

    def mib(kib: int) -> float:
        return round(kib / 1024, 1)

    results: dict[str, Any] = {  # JSON, written out below
        "dataset": {
            "config": {"classes": cfg.classes, "clips_per_class": list(cfg.clips_per_class), "seconds": cfg.seconds},
            "clips": sum(manifest["totals"].values()),
            "parquet_mb": round(size / 1e6, 1),
            "parts": len(manifest["parts"]),
            "build_s": round(build_s, 1),
            "build_cpu_s": round(build_cpu_s, 1),
            "workers": workers,
            "cpus": os.cpu_count(),
            "load_avg_1min_before_after": [round(load_before[0], 1), round(load_after[0], 1)],
        },
        "cache_file_mib": cache_mib,
        "spectral_nearest_centroid_accuracy": round(accuracy, 3),
        "readers": [
            {
                "mode": r["mode"],
                "built_cache": r["built_cache"],
                "open_and_read_s": r["open_and_read_s"],
                "rss_mib": mib(r["kib"]["VmRSS"]),
                "rss_anon_mib": mib(r["kib"]["RssAnon"]),
                "rss_file_mib": mib(r["kib"]["RssFile"]),
                "pss_mib": mib(r["kib"].get("Pss", 0)),
                "anon_growth_mib": mib(r["kib"]["RssAnon"] - r["before_open_kib"]["RssAnon"]),
            }
            for r in [*readers, copy_reader]
        ],
    }
    d = results["dataset"]
    print(
        f"default synthetic dataset: {d['clips']} clips, {d['parquet_mb']} MB Parquet in {d['parts']} parts, "
        f"built in {d['build_s']} s ({d['build_cpu_s']} CPU-s) with {d['workers']} worker(s) on {d['cpus']} CPUs "
        f"(1-min load {d['load_avg_1min_before_after'][0]} -> {d['load_avg_1min_before_after'][1]})"
    )
    print(
        f"node-local cache file: {results['cache_file_mib']} MiB; spectral nearest-centroid accuracy (test split): "
        f"{results['spectral_nearest_centroid_accuracy']:.1%}"
    )
    for r in results["readers"]:
        print(
            f"  reader ({r['mode']:5s}{', built cache' if r['built_cache'] else ''}): RSS {r['rss_mib']} MiB "
            f"(anon {r['rss_anon_mib']}, file {r['rss_file_mib']}), PSS {r['pss_mib']} MiB, "
            f"anon growth from opening {r['anon_growth_mib']} MiB, open+read {r['open_and_read_s']} s"
        )
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
