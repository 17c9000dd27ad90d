"""Search spaces: declarative YAML -> validated :class:`SearchSpace` -> Optuna define-by-run.

A space file (``search_spaces/*.yaml``) holds::

    name: demo                      # default sweep-name stem and MLflow experiment
    base: {preset: tiny, data.uri: "{storage}/datasets/synth-default", ...}   # fixed dotted keys
    common:                         # optional: distributions every strategy gets
      memory.per_class: {choice: [0, 1]}
    strategies:                     # strategy name -> its own distributions (win over common)
      finetune: {}
      contavsep:
        strategy.lambda_dist: {loguniform: [0.03, 1.0]}
        strategy.temperature: 0.05  # a bare value is fixed
    metric: sdr                     # reported per step; the last step's value is the objective
    mode: max                       #   (a bare name is measured on the split of select_on: validation)
    objectives:                     # instead of metric/mode: several objectives (Pareto front)
      - {metric: sdr, mode: max}    #   the first is reported at every step (pruning uses it)
      - {metric: forgetting/sdr, mode: min}
    select_on: val                  # val (default) | test: the split objectives and pruning read;
                                    #   test is optimistic and labelled so wherever a result is shown
    factors: [model.name]           # keys that are table rows (part of the method), never chosen
    confirm: {seeds: 3}             # the best configuration of each method by validation, run again on
                                    #   3 fresh seeds; only those runs' test numbers are ranked
    protocol: full_stream           # full_stream | {type: first_tasks, tasks: 2}: search on the first
                                    #   tasks of the stream, confirm the frozen winner on all of it
    num_samples: 6                  # configurations (each runs once per repeat)
    repeats: {seeds: 2, class_orders: 1}   # every configuration on each seed x class order (first_seed: 0)
    scheduler: {type: asha, grace_period: 2, reduction_factor: 2}   # or {type: fifo}
    sampler: {type: tpe, seed: 0}   # tpe | random | grid (grid: choice/fixed-only spaces)
    resources: {workers: 1, cpus: 1, gpus: 0, driver_cpus: 0.1}      # per Train worker; DDP if workers > 1
    max_failures: 1                 # Ray Train restarts of a failed trial (resumes from its last step)
    points_to_evaluate: paper_defaults   # or a list of {strategy.name: ..., key: value}

Distributions: ``{uniform: [lo, hi]}`` (optional ``step``), ``{loguniform: [lo, hi]}``,
``{int: [lo, hi]}`` (optional ``step``, ``log``), ``{choice: [a, b, ...]}``, ``{fixed: v}`` or
a bare value. ``{storage}`` in a string of ``base`` is replaced by the storage root of the
platform (``file:///...`` or ``s3://bucket``), so one file serves local and S3 setups.

Selection: a *method* is a strategy, its memory size and every ``factors`` key; choosing among
the configurations of one method (its other searched keys) is a *selection*. A space selects
when some strategy searches a key that is not part of the method. Objectives and pruning read the
validation sets (``val/<name>`` in trial results) unless ``select_on: test`` says otherwise; the
numbers a sweep publishes are test numbers (``test/<name>``: unprefixed in trial results), from
the confirmation runs when the space has ``confirm``.

Everything is checked before a trial starts: every key against the config (a typo names the
closest key), every strategy name against the registry, and every bound and choice by building
the real :class:`contavsep.config.Config` with it (cross-field rules included).

The Optuna space is define-by-run: the strategy first (``trial.suggest_categorical("strategy.name",
...)``), then only that strategy's parameters, so Optuna never sees λ_ewc on a LwF trial. A key
searched by several strategies is one Optuna parameter; its distributions must be of one kind
(Optuna refuses a parameter whose kind changes between trials), which is checked here.

Modules (each imports only those above it):

- :mod:`contavsep_platform.spaces.errors` -- :class:`SpaceError`.
- :mod:`contavsep_platform.spaces.keys` -- the config and Tune-config keys a space names (strategy, group, repeat).
- :mod:`contavsep_platform.spaces.objectives` -- objective names and their splits (``val/<name>``, test unprefixed).
- :mod:`contavsep_platform.spaces.selection` -- the keys of a method; what a table was chosen on, in words.
- :mod:`contavsep_platform.spaces.distributions` -- :class:`Distribution` and :func:`parse_distribution`.
- :mod:`contavsep_platform.spaces.space` -- :class:`SearchSpace`, its section dataclasses and :func:`rungs`.
- :mod:`contavsep_platform.spaces.validate` -- :func:`validate_space` and the rules it checks.
- :mod:`contavsep_platform.spaces.parse` -- :func:`parse_space`, :func:`load_space` and ``--set`` overrides.
- :mod:`contavsep_platform.spaces.resume_fingerprint` -- :func:`fingerprint` and :func:`fingerprint_differences`.
- :mod:`contavsep_platform.spaces.define_by_run` -- the Optuna side: :class:`DefineByRun`, :func:`make_sampler`.
- :mod:`contavsep_platform.spaces.notes` -- :func:`space_notes`, what to know before a sweep runs.
"""

from contavsep_platform.spaces.define_by_run import DefineByRun, make_sampler
from contavsep_platform.spaces.distributions import Distribution
from contavsep_platform.spaces.errors import SpaceError
from contavsep_platform.spaces.keys import CONFIRM_TRIAL_KEY, GROUP_KEY, REPEAT_CONFIG_KEYS, REPEAT_KEY, STRATEGY_KEY
from contavsep_platform.spaces.notes import space_notes
from contavsep_platform.spaces.objectives import SPLITS, named_metric, publish_key, result_key
from contavsep_platform.spaces.parse import load_space, parse_space, shipped_spaces_dir
from contavsep_platform.spaces.resume_fingerprint import fingerprint, fingerprint_differences
from contavsep_platform.spaces.selection import SELECTION_NOTES, selection_text
from contavsep_platform.spaces.space import (
    DRIVER_RESOURCE,
    ConfirmSpec,
    Objective,
    ProtocolSpec,
    RepeatSpec,
    Resources,
    SamplerSpec,
    SchedulerSpec,
    SearchSpace,
    rungs,
)
from contavsep_platform.spaces.validate import validate_space

__all__ = [
    "SpaceError",
    "STRATEGY_KEY",
    "GROUP_KEY",
    "REPEAT_KEY",
    "CONFIRM_TRIAL_KEY",
    "REPEAT_CONFIG_KEYS",
    "SPLITS",
    "named_metric",
    "result_key",
    "publish_key",
    "SELECTION_NOTES",
    "selection_text",
    "DRIVER_RESOURCE",
    "Resources",
    "ConfirmSpec",
    "SearchSpace",
    "rungs",
    "validate_space",
    "parse_space",
    "load_space",
    "shipped_spaces_dir",
    "fingerprint",
    "fingerprint_differences",
    "DefineByRun",
    "make_sampler",
    "space_notes",
    # Where a sweep started before the split (issue 21) pickled them (its searcher state and
    # Tune's experiment state name every class of a space by module): it resumes through these.
    "Distribution",
    "Objective",
    "ProtocolSpec",
    "RepeatSpec",
    "SamplerSpec",
    "SchedulerSpec",
]
