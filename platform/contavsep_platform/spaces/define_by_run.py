"""The Optuna side of a space: its define-by-run function and the sampler it asks for."""

from __future__ import annotations

from typing import Any

from contavsep_platform.spaces.keys import STRATEGY_KEY
from contavsep_platform.spaces.space import SearchSpace


class DefineByRun:
    """The Optuna define-by-run function of a space (a picklable object: Tune checkpoints it).

    Called with an Optuna trial: suggests ``strategy.name`` first, then that strategy's
    parameters; returns the strategy's fixed values (Ray merges them into the trial config).
    """

    def __init__(self, space: SearchSpace):
        self.space = space

    def __call__(self, trial: Any) -> dict[str, Any]:
        strategy = trial.suggest_categorical(STRATEGY_KEY, list(self.space.strategies))
        fixed: dict[str, Any] = {}
        for key, dist in self.space.strategies[strategy].items():
            if dist.is_fixed:
                fixed[key] = dist.value
            else:
                dist.suggest(trial, key)
        return fixed


def make_sampler(space: SearchSpace) -> Any:
    """The Optuna sampler the space asks for (``optuna.samplers.BaseSampler``)."""
    import warnings

    import optuna

    smp = space.sampler
    if smp.type == "grid":
        from contavsep_platform.grid_sampler import AskTellGridSampler

        return AskTellGridSampler(space.grid(), seed=smp.seed)
    if smp.type == "random":
        return optuna.samplers.RandomSampler(seed=smp.seed)
    if smp.type == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=smp.seed)
    # multivariate + group: TPE models each strategy's parameters jointly and apart from the other
    # strategies' (the space is conditional: trials of different strategies have different keys).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=smp.seed, n_startup_trials=smp.n_startup_trials, multivariate=True, group=True
        )
