"""`contavsep study SWEEP`: the sweep's Optuna study (its journal) as a local file for
optuna-dashboard and optuna.load_study; ``--dashboard`` serves it."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "study",
        help="fetch a sweep's Optuna study (optuna-journal.log) from its storage and print how to open it; --dashboard serves it",
    )
    p.add_argument("sweep", help="sweep name (as given to `contavsep sweep --name`)")
    p.add_argument("--out", default=None, help="folder for the copy of an S3 journal (default: ./studies/<sweep>)")
    p.add_argument("--dashboard", action="store_true", help="serve optuna-dashboard on it (Ctrl-C stops it)")
    p.add_argument("--port", type=int, default=8080, help="optuna-dashboard's port (default 8080, on 127.0.0.1)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from contavsep import storage
    from contavsep_platform.errors import UserError
    from contavsep_platform.settings import resolve_endpoints
    from contavsep_platform.study import fetch_journal, journal_uri
    from contavsep_platform.sweep import check_sweep_name

    name = check_sweep_name(args.sweep)
    endpoints = resolve_endpoints()
    uri = journal_uri(storage.join(endpoints.storage_uri, "sweeps", name))
    out = Path(args.out or Path("studies") / name).resolve()
    try:
        path = fetch_journal(uri, out, endpoints.s3)
    except storage.StorageError as exc:
        raise UserError(
            f"{exc} (a sweep started before studies were kept has none; check the name and CONTAVSEP_STORAGE)"
        ) from None
    print(f"study: {path} (Optuna study '{name}', journal storage)")
    if not args.dashboard:
        print(f"open it with: optuna-dashboard {path}")
        return 0
    from optuna_dashboard import run_server
    from optuna_dashboard._storage_url import get_storage

    print(f"optuna-dashboard on http://127.0.0.1:{args.port}/dashboard (Ctrl-C stops it)", flush=True)
    run_server(get_storage(str(path)), host="127.0.0.1", port=args.port)
    return 0
