"""Optuna's grid sampler for a study driven by ask and tell (the sweep's searcher).

``optuna.samplers.GridSampler.after_trial`` calls ``study.stop()`` once the last grid point is
told, which only works inside ``study.optimize``; under ask and tell it raises, so the last
configuration of every grid sweep (``paper.yaml``, ``memory_size.yaml``) failed when Optuna was
told its result. The searcher counts configurations itself (a grid space's ``num_samples`` is
the grid size), so nothing needs stopping.
"""

from __future__ import annotations

from collections.abc import Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState


class AskTellGridSampler(optuna.samplers.GridSampler):
    """``GridSampler`` whose ``after_trial`` does not stop the study (see the module docstring)."""

    def after_trial(
        self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None
    ) -> None:
        return None
