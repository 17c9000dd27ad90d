"""`contavsep report --sweep NAME`: markdown tables and PNG plots of a sweep, from MLflow."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="ranking of a sweep's configurations over their repeats (95%% CIs, paired differences), Table 1 style,"
        " per-step SDR, Pareto front, hyperparameter importance, parallel coordinates and R matrices, as markdown"
        " and one HTML page, from MLflow",
    )
    p.add_argument("--sweep", required=True, help="sweep name (as given to `contavsep sweep --name`)")
    p.add_argument("--out", default=None, help="output folder (default: ./reports/<sweep>)")
    p.add_argument("--experiment", default=None, help="MLflow experiment name (default: search all experiments)")
    p.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else the local services started by `contavsep services up`)",
    )
    p.add_argument(
        "--metric",
        default=None,
        help="final value that ranks the configurations: sdr, forgetting/sdr, ... or the MLflow key final/sdr"
        " (default: the sweep space's metric, else sdr)",
    )
    p.add_argument(
        "--mode",
        default=None,
        choices=("max", "min"),
        help="whether the metric is maximised or minimised (default: the space's mode for it; min for forgetting, else max)",
    )
    p.add_argument("--quiet", action="store_true", help="do not print the report, only where it was written")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from contavsep_platform.errors import UserError
    from contavsep_platform.report import write_report
    from contavsep_platform.settings import check_tracking_uri

    uri = args.tracking_uri
    if uri is None:
        from contavsep_platform.settings import resolve_endpoints

        uri = resolve_endpoints().mlflow_tracking_uri
    if not uri:
        raise UserError(
            "no MLflow tracking server configured: start the local services (`contavsep services up`),"
            " set MLFLOW_TRACKING_URI, or pass --tracking-uri"
        )
    check_tracking_uri(uri, "--tracking-uri" if args.tracking_uri else "MLFLOW_TRACKING_URI")
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        # MLflow would create an empty database there (and log its migration) to find no sweep.
        raise UserError(
            f"no MLflow database at {uri.removeprefix('sqlite:///')}: check --tracking-uri / MLFLOW_TRACKING_URI"
        )
    _send_pending(uri, args.sweep)
    out = Path(args.out or Path("reports") / args.sweep).resolve()
    report = write_report(uri, args.sweep, out, experiment=args.experiment, metric=args.metric, mode=args.mode)
    if not args.quiet:
        print(report.markdown, end="")
    print(f"report: {report.files[0]}")
    for path in report.files[1:]:
        print(f"{'page' if path.suffix == '.html' else 'plot'}:   {path}")
    return 0


def _send_pending(tracking_uri: str, sweep: str) -> None:
    """Send what an MLflow outage kept from the sweep's final flush (its storage's
    ``mlflow-pending.json`` files) before reading the sweep back; without storage, nothing."""
    import sys

    from contavsep import storage
    from contavsep_platform.settings import resolve_endpoints
    from contavsep_platform.tracking import send_all_pending

    endpoints = resolve_endpoints()
    if not endpoints.storage_uri or "/" in sweep:
        return
    try:
        sent, left = send_all_pending(tracking_uri, storage.join(endpoints.storage_uri, "sweeps", sweep), endpoints.s3)
    except storage.StorageError as exc:
        print(f"contavsep report: note: could not look for results kept from an MLflow outage: {exc}", file=sys.stderr)
        return
    if sent:
        print(
            f"sent {sent} final flush(es) of sweep {sweep} that MLflow had missed (kept in its storage)",
            file=sys.stderr,
        )
    if left:
        print(
            f"contavsep report: note: {left} final flush(es) of sweep {sweep} still wait for MLflow; the report may lack them",
            file=sys.stderr,
        )
