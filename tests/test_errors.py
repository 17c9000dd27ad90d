"""One error family and one "did you mean": every error class of both packages derives from the
library's base, the CLI turns any of them into one line with exit status 2, and a missing weights
file is refused by `run` and `sweep --check` before anything is built or written."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import pytest

from contavsep.errors import ContavsepError
from contavsep.suggest import CUTOFF, closest, did_you_mean
from contavsep_platform.cli import main
from contavsep_platform.errors import USER_ERRORS, PlatformError, UserError

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"contavsep": ROOT / "contavsep", "contavsep_platform": ROOT / "platform" / "contavsep_platform"}


def _error_classes() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for package, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = [package, *path.relative_to(folder).with_suffix("").parts]
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            module = importlib.import_module(name)
            for attr, value in vars(module).items():
                if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == name:
                    found[f"{name}.{attr}"] = value
    return found


def test_every_error_class_of_both_packages_derives_from_the_library_base():
    classes = _error_classes()
    assert len(classes) >= 18  # the 18 of the review, and the bases
    outside = sorted(name for name, cls in classes.items() if not issubclass(cls, ContavsepError))
    assert not outside, f"errors outside the family (derive them from contavsep.errors.ContavsepError): {outside}"
    # the platform's own errors are platform errors; the CLI catches the whole family
    platform = [cls for name, cls in classes.items() if name.startswith("contavsep_platform.")]
    assert all(issubclass(cls, PlatformError) for cls in platform)
    assert issubclass(UserError, PlatformError) and ContavsepError in USER_ERRORS


def test_errors_keep_the_builtin_base_callers_catch():
    from contavsep.config import ConfigError
    from contavsep.models.weights_file import WeightsError
    from contavsep.registry import RegistryError

    assert issubclass(ConfigError, ValueError) and issubclass(WeightsError, ValueError)
    assert issubclass(RegistryError, KeyError) and str(RegistryError("no such thing")) == "no such thing"


def test_one_suggestion_rule_for_every_refusal():
    assert closest("strategy.lamda_ins", ["strategy.lambda_ins", "strategy.lambda_cls"]) == "strategy.lambda_ins"
    assert did_you_mean("contavsp", ["contavsep", "lwf"]) == " (did you mean 'contavsep'?)"
    # an unrelated name gets no suggestion rather than a misleading one
    assert did_you_mean("zzz", ["contavsep", "lwf"]) == "" and closest("zzz", []) is None
    assert 0.5 <= CUTOFF <= 0.8
    from contavsep.config import make_config
    from contavsep.registry import STRATEGIES

    with pytest.raises(ContavsepError, match=r"did you mean 'strategy.lambda_ins'"):
        make_config("tiny", {"strategy.lamda_ins": 1})
    with pytest.raises(ContavsepError, match=r"did you mean 'contavsep'"):
        STRATEGIES.check("contavsp")


def test_a_missing_weights_file_is_one_line_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "runs" / "DIR"
    code = main(
        [
            "run",
            "--data",
            f"file://{tmp_path}/no-dataset",
            "--preset",
            "tiny",
            "--set",
            f"model.weights={tmp_path}/nonexistent.pt",
            "--out",
            str(out),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == [
        f"contavsep run: error: model weights file {tmp_path}/nonexistent.pt does not exist"
        " (model.weights names a local .pt file)"
    ]
    assert not (tmp_path / "runs").exists()


def test_sweep_check_refuses_a_missing_weights_file_every_trial_would_fail_on(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CONTAVSEP_HOME", str(tmp_path / "home"))
    code = main(
        [
            "sweep",
            "--check",
            str(ROOT / "search_spaces" / "smoke.yaml"),
            "--set",
            f"model.weights={tmp_path}/nonexistent.pt",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert (
        err[0].startswith("contavsep sweep: error: space smoke: base: model weights file")
        and "does not exist" in err[0]
    )
    # an s3:// object cannot be read by the loader: refused the same way, naming what to do
    code = main(["sweep", "--check", str(ROOT / "search_spaces" / "smoke.yaml"), "--set", "model.weights=s3://b/w.pt"])
    assert code == 2 and "only local paths and file:// URIs" in capsys.readouterr().err
