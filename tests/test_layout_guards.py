"""Guards against the traps of this layout: a `platform` package shadowing the standard library,
and the science library pulling in the platform's heavy dependencies."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_platform_is_a_source_root_not_a_package():
    assert (ROOT / "platform" / "contavsep_platform" / "__init__.py").is_file()
    assert not (ROOT / "platform" / "__init__.py").exists()


def _run(code: str, cwd: Path, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **(extra_env or {})}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_stdlib_platform_from_repo_root():
    out = _run("import platform; print(platform.system())", ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() in {"Linux", "Darwin", "Windows"}


def test_stdlib_platform_with_repo_on_pythonpath(tmp_path):
    out = _run("import platform; print(platform.system())", tmp_path, {"PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() in {"Linux", "Darwin", "Windows"}


def test_science_library_imports_without_ray_and_mlflow(tmp_path):
    # A meta-path finder that refuses ray and mlflow: importing them would raise.
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('ray', 'mlflow'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import pkgutil, importlib, contavsep\n"
        "mods = [m.name for m in pkgutil.walk_packages(contavsep.__path__, 'contavsep.')]\n"
        "for m in mods:\n"
        "    importlib.import_module(m)\n"
        "assert 'ray' not in sys.modules and 'mlflow' not in sys.modules\n"
        "print(len(mods))\n"
    )
    out = _run(code, tmp_path)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip()) >= 1


def test_console_script_help():
    exe = Path(sys.executable).parent / "contavsep"
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "config" in out.stdout


def test_cli_bad_key_is_one_clear_line_and_nonzero():
    exe = Path(sys.executable).parent / "contavsep"
    out = subprocess.run(
        [str(exe), "config", "--set", "strategy.lamda_ins=1"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 2
    assert "did you mean 'strategy.lambda_ins'" in out.stderr
    assert "Traceback" not in out.stderr
