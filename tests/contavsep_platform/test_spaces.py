"""Search spaces: YAML -> validation against the real config -> Optuna define-by-run (no Ray)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import optuna
import pytest

from contavsep.config import LEGACY_STRATEGY_DEFAULTS
from contavsep.registry import STRATEGIES
from contavsep_platform.spaces import (
    STRATEGY_KEY,
    DefineByRun,
    Resources,
    SpaceError,
    load_space,
    make_sampler,
    parse_space,
    shipped_spaces_dir,
)

STORAGE = "file:///tmp/contavsep-test-storage"

optuna.logging.set_verbosity(optuna.logging.WARNING)


def space_text(strategies: str, extra: str = "", base_extra: str = "") -> str:
    """A minimal valid space around ``strategies`` (a YAML block, indented 2)."""
    return (
        textwrap.dedent(
            """\
        name: t
        base:
          preset: tiny
          data.uri: "{storage}/datasets/x"
          data.num_steps: 2
          data.classes_per_step: 2
        """
        )
        + textwrap.indent(textwrap.dedent(base_extra), "  ")
        + "strategies:\n"
        + textwrap.indent(textwrap.dedent(strategies), "  ")
        + textwrap.dedent(extra)
    )


def parse(strategies: str, extra: str = "", base_extra: str = "", **kwargs):
    return parse_space(space_text(strategies, extra, base_extra), source="t.yaml", storage_uri=STORAGE, **kwargs)


# ----------------------------------------------------------------------------- shipped spaces


def test_shipped_spaces_validate_and_say_what_the_issue_asks():
    names = sorted(p.stem for p in shipped_spaces_dir().glob("*.yaml"))
    assert names == ["contavsep_lambdas", "demo", "memory_size", "paper", "smoke"]
    spaces = {n: load_space(shipped_spaces_dir() / f"{n}.yaml", storage_uri=STORAGE) for n in names}

    smoke = spaces["smoke"]
    assert smoke.base["preset"] == "tiny" and smoke.num_steps == 2 and smoke.base["data.classes_per_step"] == 2
    assert smoke.resources.gpus == 0 and smoke.num_samples <= 3
    assert smoke.base["data.uri"] == f"{STORAGE}/datasets/synth-default"

    demo = spaces["demo"]
    assert demo.base["preset"] == "tiny" and set(demo.strategies) == {"finetune", "lwf", "contavsep", "joint"}
    assert demo.num_samples == len(demo.points_to_evaluate) == 5 and demo.repeats.seeds >= 2
    assert demo.scheduler.type == "fifo"  # every run of the table finishes
    assert demo.resources.concurrent_trials({"CPU": 2.0}) == 2  # both cores busy, no deadlock

    paper = spaces["paper"]
    # Table 1's rows, each a registered strategy (a strategy added later joins the table by choice)
    assert set(paper.strategies) == {"finetune", "lwf", "ewc", "plop", "ewf", "avcil", "contavsep", "joint"}
    assert set(paper.strategies) <= set(STRATEGIES.names())
    for params in paper.strategies.values():
        assert params["memory.per_class"].choices == (0, 1)
        assert set(params["model.name"].choices) == {"iquery", "coseparation"}
    assert paper.sampler.type == "grid" and paper.num_samples == paper.grid_size() == 8 * 2 * 2
    assert paper.resources.gpus > 0 and paper.base["preset"] == "paper"
    # Table 1: the separator is a factor (a row), so nothing is chosen; every cell on >= 3 seeds
    assert paper.factors == ("model.name",) and not paper.selects and paper.selection == "none"
    assert paper.repeats.seeds >= 3
    # every space reads validation unless it says otherwise; the tables publish test numbers
    assert all(
        sp.metric == "val/sdr" and sp.metric_key == "val/sdr" and sp.publish_metric == "test/sdr"
        for sp in spaces.values()
    )
    assert not demo.selects and not spaces["memory_size"].selects  # each method once: no selection

    lambdas = spaces["contavsep_lambdas"]
    assert set(lambdas.strategies) == {"contavsep"}
    assert set(lambdas.strategies["contavsep"]) == {
        "strategy.lambda_ins",
        "strategy.lambda_cls",
        "strategy.lambda_dist",
        "strategy.temperature",
        "memory.per_class",
    }
    # memory is fixed per method (more memory always helps SDR: TPE would drift to the largest)
    assert lambdas.strategies["contavsep"]["memory.per_class"].is_fixed
    # The paper's values are the first point to evaluate.
    assert lambdas.points_to_evaluate[0] == {
        STRATEGY_KEY: "contavsep",
        "strategy.lambda_ins": 0.1,
        "strategy.lambda_cls": 0.3,
        "strategy.lambda_dist": 0.3,
        "strategy.temperature": 0.05,
    }
    assert lambdas.selects and lambdas.confirms and lambdas.confirm.seeds >= 3 and lambdas.select_on == "val"
    assert 0 < lambdas.resources.gpus < 1

    memory = spaces["memory_size"]
    assert all(
        p["memory.per_class"].kind == "choice" and len(p["memory.per_class"].choices) >= 3
        for p in memory.strategies.values()
    )


def test_missing_space_file_names_the_shipped_ones(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="search_spaces/smoke.yaml"):
        load_space(tmp_path / "nope.yaml", storage_uri=STORAGE)


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("strategies", "extra", "base_extra", "message"),
    [
        ("contavsep: {}\n", "", "strategy.lamda_ins: 0.2\n", "did you mean 'strategy.lambda_ins'"),
        ("contavsep:\n  strategy.lambda_distt: {uniform: [0.1, 1]}\n", "", "", "did you mean 'strategy.lambda_dist'"),
        ("contavsepp: {}\n", "", "", "did you mean 'contavsep'"),
        ("contavsep:\n  strategy.lambda_dist: {loguniformm: [0.1, 1]}\n", "", "", "did you mean 'loguniform'"),
        ("contavsep: {}\n", "schedular: {type: asha}\n", "", "did you mean 'scheduler'"),
        ("contavsep: {}\n", "metric: sdr_olt\n", "", "did you mean 'sdr_old'|not reported at every step"),
        ("contavsep: {}\n", "resources: {cpu: 1}\n", "", "did you mean 'cpus'"),
    ],
)
def test_typos_are_refused_with_the_closest_name(strategies, extra, base_extra, message):
    with pytest.raises(SpaceError, match=message):
        parse(strategies, extra, base_extra)


def test_bounds_and_choices_are_checked_by_building_the_real_config():
    # temperature must be > 0: the lower bound 0 is refused, naming the key and the value
    with pytest.raises(SpaceError, match=r"strategy.temperature = 0.0.*strategy.temperature must be > 0"):
        parse("contavsep:\n  strategy.temperature: {uniform: [0.0, 0.5]}\n")
    with pytest.raises(SpaceError, match=r"ewf_alpha = 1.5"):
        parse("ewf:\n  strategy.ewf_alpha: {uniform: [0.5, 1.5]}\n")
    # a cross-field rule: the tiny grid (64 x 64) is not divisible by 2**7
    with pytest.raises(SpaceError, match=r"model.unet_depth = 7.*divisible"):
        parse("finetune:\n  model.unet_depth: {choice: [5, 7]}\n")
    # a wrong type in a choice
    with pytest.raises(SpaceError, match=r"memory.per_class = 'one'"):
        parse("finetune:\n  memory.per_class: {choice: [0, 'one']}\n")
    # each value is valid alone, but the first values together are not (24 % 16): corners are checked
    with pytest.raises(SpaceError, match="every parameter at its lower bound.*divisible"):
        parse("finetune:\n  model.d_model: {choice: [24, 32]}\n  model.n_heads: {choice: [16, 4]}\n")


def test_keys_that_must_be_equal_across_trials_are_not_searchable():
    with pytest.raises(SpaceError, match="data.num_steps.*same number of steps"):
        parse("finetune:\n  data.num_steps: {choice: [2, 3]}\n")
    with pytest.raises(SpaceError, match="base must not set strategy.name"):
        parse("finetune: {}\n", base_extra="strategy.name: lwf\n")
    with pytest.raises(SpaceError, match="must set data.uri"):
        parse_space("base: {preset: tiny}\nstrategies: [finetune]\n", storage_uri=STORAGE)


def test_one_optuna_parameter_needs_one_kind_of_distribution():
    with pytest.raises(SpaceError, match="strategy.lambda_dist is searched as loguniform.*by lwf and as uniform"):
        parse(
            "lwf:\n  strategy.lambda_dist: {loguniform: [0.1, 1]}\ncontavsep:\n  strategy.lambda_dist: {uniform: [0.1, 1]}\n"
        )
    # same kind, different ranges: fine
    space = parse(
        "lwf:\n  strategy.lambda_dist: {loguniform: [0.1, 1]}\ncontavsep:\n  strategy.lambda_dist: {loguniform: [0.05, 3]}\n"
    )
    assert space.strategies["contavsep"]["strategy.lambda_dist"].high == 3


def test_malformed_distributions():
    for bad, message in [
        ("{uniform: [1.0, 0.5]}", "low < high"),
        ("{loguniform: [0.0, 1.0]}", "low > 0"),
        ("{int: [0, 5], step: 2}", "not a multiple of step"),
        ("{choice: []}", "non-empty list"),
        ("[0.1, 0.2]", "ambiguous"),
        ("{uniform: [0, 1], choice: [1]}", "exactly one"),
    ]:
        with pytest.raises(SpaceError, match=message):
            parse(f"lwf:\n  strategy.lambda_dist: {bad}\n")


# ----------------------------------------------------------------------------- define-by-run


def test_define_by_run_asks_for_the_strategy_first_then_only_its_parameters():
    space = parse(
        """\
        finetune: {}
        lwf:
          strategy.lambda_dist: {loguniform: [0.1, 3.0]}
        contavsep:
          strategy.lambda_ins: {loguniform: [0.01, 1.0]}
          strategy.lambda_dist: {loguniform: [0.1, 3.0]}
          memory.per_class: {int: [0, 3]}
          strategy.temperature: 0.07
        """,
        extra="num_samples: 30\n",
    )
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=3))
    define = DefineByRun(space)
    seen = set()
    for _ in range(30):
        trial = study.ask()
        fixed = define(trial)
        names = list(trial.distributions)
        strategy = trial.params[STRATEGY_KEY]
        seen.add(strategy)
        assert names[0] == STRATEGY_KEY  # suggested first
        expected = {k for k, d in space.strategies[strategy].items() if not d.is_fixed} | {STRATEGY_KEY}
        assert set(names) == expected  # nothing of the other strategies
        assert fixed == ({"strategy.temperature": 0.07} if strategy == "contavsep" else {})
        cfg = space.trial_config({**trial.params, **fixed})  # every sampled config is a valid Config
        assert cfg.strategy.name == strategy and cfg.preset == "tiny"
        if strategy == "contavsep":
            assert cfg.strategy.params.temperature == 0.07 and 0 <= cfg.memory.per_class <= 3
        study.tell(trial, 0.0)
    assert seen == {"finetune", "lwf", "contavsep"}


def test_grid_sampler_visits_every_combination_once():
    space = load_space(shipped_spaces_dir() / "paper.yaml", storage_uri=STORAGE)
    study = optuna.create_study(direction="maximize", sampler=make_sampler(space))
    define = DefineByRun(space)
    combos = set()

    def objective(trial: optuna.Trial) -> float:
        define(trial)
        combos.add(tuple(sorted(trial.params.items())))
        return 0.0

    study.optimize(objective, n_trials=space.num_samples)
    assert len(combos) == 32
    assert {dict(c)["memory.per_class"] for c in combos} == {0, 1}


def test_points_to_evaluate_complete_missing_keys_with_the_paper_defaults():
    space = parse(
        "lwf:\n  strategy.lambda_dist: {loguniform: [0.1, 3.0]}\ncontavsep:\n  strategy.lambda_ins: {loguniform: [0.01, 1.0]}\n",
        extra="num_samples: 4\npoints_to_evaluate:\n  - {strategy.name: contavsep, strategy.lambda_ins: 0.5}\n  - {strategy.name: lwf}\n",
    )
    assert space.points_to_evaluate == (
        {STRATEGY_KEY: "contavsep", "strategy.lambda_ins": 0.5},
        {STRATEGY_KEY: "lwf", "strategy.lambda_dist": 0.3},
    )
    with pytest.raises(SpaceError, match=r"strategy.lambda_dist = 0.3 \(default\) is outside loguniform\[0.5, 3.0\]"):
        parse("lwf:\n  strategy.lambda_dist: {loguniform: [0.5, 3.0]}\n", extra="points_to_evaluate: paper_defaults\n")
    with pytest.raises(SpaceError, match="'strategy.lambda_ins' is not searched by lwf"):
        parse(
            "lwf:\n  strategy.lambda_dist: {loguniform: [0.1, 3.0]}\n",
            extra="points_to_evaluate:\n  - {strategy.name: lwf, strategy.lambda_ins: 0.1}\n",
        )
    with pytest.raises(SpaceError, match="raise num_samples"):
        parse("lwf: {}\ncontavsep: {}\n", extra="num_samples: 1\npoints_to_evaluate: paper_defaults\n")


def test_set_overrides_fix_a_key_for_every_trial():
    space = parse(
        "lwf:\n  strategy.lambda_dist: {loguniform: [0.1, 3.0]}\ncontavsep:\n  strategy.lambda_dist: {loguniform: [0.1, 3.0]}\n",
        overrides={
            "strategy.lambda_dist": "0.7",
            "data.uri": "s3://bucket/datasets/music21",
            "train.iters_per_step": "5",
        },
    )
    assert all("strategy.lambda_dist" not in p for p in space.strategies.values())
    cfg = space.trial_config({STRATEGY_KEY: "lwf"})
    assert (cfg.strategy.params.lambda_dist, cfg.data.uri, cfg.train.iters_per_step) == (
        0.7,
        "s3://bucket/datasets/music21",
        5,
    )
    with pytest.raises(SpaceError, match="strategies"):
        parse("lwf: {}\n", overrides={STRATEGY_KEY: "ewc"})
    with pytest.raises(SpaceError, match="did you mean 'train.iters_per_step'"):
        parse("lwf: {}\n", overrides={"train.iter_per_step": "5"})


# ----------------------------------------------------------------------------- resources


def test_concurrent_trials_follow_the_limiting_resource():
    # 2 cores: a worker of 0.9 CPU + a driver of 0.1 -> two trials; a whole CPU per worker -> one
    assert Resources(cpus=0.9, driver_cpus=0.1).concurrent_trials({"CPU": 2.0}) == 2
    assert Resources(cpus=1.0, driver_cpus=0.1).concurrent_trials({"CPU": 2.0}) == 1
    # GPUs limit: 2 GPUs, half a GPU per trial -> 4 at once, even with many CPUs
    assert Resources(cpus=2, gpus=0.5).concurrent_trials({"CPU": 64.0, "GPU": 2.0}) == 4
    # DDP: two workers of one GPU each -> one trial per two GPUs
    assert Resources(workers=2, cpus=1, gpus=1).concurrent_trials({"CPU": 16.0, "GPU": 4.0}) == 2
    # CPUs can be the limit of a GPU trial too
    assert Resources(cpus=8, gpus=0.25).concurrent_trials({"CPU": 16.0, "GPU": 4.0}) == 1
    # an explicit cap (autoscaling clusters grow into it)
    assert Resources(cpus=1, gpus=1, max_concurrent=8).concurrent_trials({"CPU": 2.0}) == 8
    with pytest.raises(SpaceError, match="needs 1 GPU.*cluster has 0"):
        Resources(cpus=1, gpus=1).concurrent_trials({"CPU": 8.0})


def test_resource_settings_are_checked():
    with pytest.raises(SpaceError, match="whole number"):
        parse("lwf: {}\n", extra="resources: {gpus: 1.5}\n")
    with pytest.raises(SpaceError, match="divisible by resources.workers"):
        parse("lwf: {}\n", extra="resources: {workers: 3}\n")
    with pytest.raises(SpaceError, match="driver_cpus > 0"):
        parse("lwf: {}\n", extra="resources: {driver_cpus: 0}\n")


def test_drivers_go_to_the_heads_driver_resource_when_the_cluster_offers_it():
    from contavsep_platform.spaces import DRIVER_RESOURCE, Resources

    gpu_trial = Resources(workers=1, cpus=4, gpus=1, driver_cpus=0.1)
    head = {"CPU": 32.0, "GPU": 8.0, DRIVER_RESOURCE: 3.0}  # cluster/*.yaml: the head has drivers, no CPU
    assert gpu_trial.driver_resources(head) == {"cpu": 0.0, DRIVER_RESOURCE: 0.1}
    assert gpu_trial.concurrent_trials(head) == 8  # GPUs limit; drivers (30) and CPUs (8) do not
    assert (
        Resources(workers=1, cpus=1, gpus=0, driver_cpus=0.5).concurrent_trials({"CPU": 32.0, DRIVER_RESOURCE: 3.0})
        == 6
    )
    # a plain machine: the driver takes a fraction of a CPU, counted with the workers' CPUs
    cpu_trial = Resources(workers=1, cpus=0.9, gpus=0, driver_cpus=0.1)
    assert cpu_trial.driver_resources({"CPU": 2.0}) == {"cpu": 0.1}
    assert cpu_trial.concurrent_trials({"CPU": 2.0}) == 2


def test_resume_ignores_speed_only_and_retired_keys_but_not_the_science():
    from contavsep_platform.spaces import fingerprint, fingerprint_differences

    def fp(base_extra: str = "") -> dict[str, str]:
        return fingerprint(parse_space(space_text("finetune: {}\n", base_extra=base_extra), storage_uri=STORAGE))

    stored = fp()
    # a sweep started on CPUs may go on with GPU speed options (same results up to float rounding)
    assert fingerprint_differences(stored, fp("train.compile: reduce-overhead\ntrain.channels_last: true\n")) == []
    # a fingerprint written before train.num_workers was retired (and with the old bool defaults)
    old = {**stored, "base.train.num_workers": "0", "base.train.channels_last": "False"}
    assert fingerprint_differences(old, fp()) == []
    # what changes results still refuses the resume
    differences = fingerprint_differences(stored, fp("train.lr_unet: 0.005\n"))
    assert len(differences) == 1 and differences[0].startswith("base.train.lr_unet:")
    # a sweep recorded before validation could score SDR alone scored SIR/SAR too: resuming it under
    # today's default is a change (named, with the old value), and resumes when set back
    before = {k: v for k, v in stored.items() if k != "base.eval.val_metrics"}
    assert fingerprint_differences(before, fp()) == ["base.eval.val_metrics: 'all' -> 'sdr'"]
    assert fingerprint_differences(before, fp("eval.val_metrics: all\n")) == []
    # a sweep recorded before each strategy declared its own keys holds the default strategy's
    # keys in its base (all of them, at their defaults): it resumes; a value the base set counts
    legacy = {
        **stored,
        **{f"base.{k}": repr(v) for k, v in LEGACY_STRATEGY_DEFAULTS.items()},
        "base.strategy.name": "'contavsep'",
    }
    assert "base.strategy.lambda_ewc" in legacy and "base.strategy.lambda_ewc" not in stored
    assert fingerprint_differences(legacy, fp()) == []
    assert fingerprint_differences({**legacy, "base.strategy.lambda_dist": "0.7"}, fp()) == [
        "base.strategy.lambda_dist: 0.7 -> (not set)"
    ]
    # a strategy key set in base is the base's (typed), for every strategy of the space
    ewc = parse_space(space_text("ewc: {}\n", base_extra="strategy.fisher_batches: '7'\n"), storage_uri=STORAGE)
    assert fingerprint(ewc)["base.strategy.fisher_batches"] == "7"


def test_a_space_pickled_before_the_package_split_loads_with_every_class_from_its_old_module():
    # A sweep started before issue 21 pickled its space (the searcher's saved state, Tune's
    # experiment state) naming every class as contavsep_platform.spaces.<Class>: --resume must
    # load it. Protocol 2 writes each class reference as text ("module\nname\n"), so the old
    # references are today's with the submodule dropped.
    import pickle
    import re

    for path in sorted(shipped_spaces_dir().glob("*.yaml")):
        space = load_space(path, storage_uri=STORAGE, overrides={"data.uri": "s3://bucket/datasets/x"})
        today = pickle.dumps(space, protocol=2)
        assert b"contavsep_platform.spaces.space\nSearchSpace\n" in today
        before_split = re.sub(rb"contavsep_platform\.spaces\.\w+\n", b"contavsep_platform.spaces\n", today)
        assert pickle.loads(before_split) == space, path.name


def test_sweep_check_says_how_many_trials_share_a_gpu():
    from contavsep_platform.spaces import Resources

    assert Resources(workers=1, cpus=4, gpus=0.5).gpu_sharing().startswith("2 trials per GPU")
    assert Resources(workers=1, cpus=1, gpus=0.25).gpu_sharing().startswith("4 trials per GPU")
    assert Resources(workers=2, cpus=1, gpus=0.5).gpu_sharing().startswith("1 trial per GPU")
    assert Resources(workers=4, cpus=1, gpus=0.5).gpu_sharing().startswith("1 trial per 2 GPUs")
    assert Resources(workers=2, cpus=8, gpus=1).gpu_sharing().startswith("2 GPU(s) per trial")
    assert Resources(workers=1, cpus=1, gpus=0).gpu_sharing() == "no GPU (CPU trials)"
