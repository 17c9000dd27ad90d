"""The sweep report: configurations ranked over their repeats, read back from MLflow (paper
Table 1 / Fig. 3 style, with 95 % confidence intervals).

Reads what :mod:`contavsep_platform.tracking` logged: the sweep's parent run (found by the
``contavsep.sweep`` tag; its artifact ``search_space.yaml`` names the metric, the objectives and
the repeats), its child runs (one per trial: params = dotted config, ``final/...`` metrics,
per-step ``sdr`` history). The runs become :class:`~contavsep_platform.comparison.RunRecord`
objects and are ranked by :mod:`contavsep_platform.comparison`, the same code that ranks the
sweep's own Tune results, so the report and the sweep agree:

- a *configuration* is every run with the same config except the repeat keys (``train.seed``,
  ``data.seed``, ``data.shuffle_classes``) and bookkeeping keys (:data:`NOT_HYPERPARAMETERS`);
  its id is a hash of those params (not the sweep's Tune group id, which hashes the space's
  overrides that MLflow does not hold; both group the same runs);
- a *repeat* is a seed and class order (``seed0-order0``); differences between methods are
  paired on it.

Writes into one folder:

- ``report.md``: run, configuration and repeat counts; the ranking (best configuration per
  method: mean ± 95 % CI and n, paired differences vs fine-tuning and the next method, the
  conclusion); a Table-1-like table (rows: strategies in the paper's order; column groups:
  separator x with/without memory; cells: the best configuration of the cell, mean ± CI (n));
  every configuration; per-step SDR of each method's best configuration (mean ± CI per step);
  the Pareto front of a multi-objective sweep; every run with its status.
- ``final_scores.png`` (means with CI bars), ``step_sdr.png`` (Fig. 3 with CI bands),
  ``pareto.png`` (multi-objective sweeps), and the views of the search
  (:mod:`contavsep_platform.search_views`): ``importance.png``, ``parallel_coordinates.png``,
  ``r_matrices.png``;
- ``report.html``: the ranking and every view on one page a browser opens from disk
  (:mod:`contavsep_platform.report_html`); a view that does not apply says why.

:func:`log_report` writes the same folder as artifacts of the sweep's parent run (``report/``),
which the sweep does when it ends.

A run without ``final/...`` metrics (stopped early by ASHA, failed, still running) is listed but
never ranked, and neither is its configuration: a mean over fewer seen classes or fewer repeats
is not comparable.

Modules (each imports only those above it):

- :mod:`contavsep_platform.report.records` -- :class:`TrialRecord` and :class:`SweepRecord`, a sweep's runs.
- :mod:`contavsep_platform.report.load` -- reading MLflow: :func:`load_sweep`, :func:`step_history`.
- :mod:`contavsep_platform.report.space_file` -- :func:`space_info`: the logged ``search_space.yaml``.
- :mod:`contavsep_platform.report.labels` -- the methods' and models' names and the paper's order.
- :mod:`contavsep_platform.report.ranking` -- :func:`run_records`: the runs as ranked; the selection.
- :mod:`contavsep_platform.report.markdown` -- the header, the ranking rows and the Table-1-style table.
- :mod:`contavsep_platform.report.views` -- the views of the search and the Pareto-front section.
- :mod:`contavsep_platform.report.build` -- :class:`Report` and :func:`build_report`.
- :mod:`contavsep_platform.report.write` -- :func:`write_report` and :func:`log_report`.
"""

from contavsep_platform.report.build import build_report
from contavsep_platform.report.load import load_sweep, step_history
from contavsep_platform.report.ranking import run_records
from contavsep_platform.report.records import SweepRecord, TrialRecord, comparison_name
from contavsep_platform.report.space_file import space_info
from contavsep_platform.report.write import log_report, write_report

__all__ = [
    "TrialRecord",
    "SweepRecord",
    "comparison_name",
    "load_sweep",
    "step_history",
    "space_info",
    "run_records",
    "build_report",
    "write_report",
    "log_report",
]
