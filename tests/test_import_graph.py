"""The import graph of both packages: no cycle anywhere, imports inside functions included, and
every module imports on its own in a fresh process.

A cycle held together by an import inside a function still couples the two modules both ways;
it just hides the coupling from the import system. So the graph is read from the source (every
``import`` statement, at any depth) rather than from ``sys.modules``.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE_ROOTS = {"contavsep": ROOT / "contavsep", "contavsep_platform": ROOT / "platform" / "contavsep_platform"}


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of both packages (packages as their __init__)."""
    found: dict[str, Path] = {}
    for package, folder in SOURCE_ROOTS.items():
        for path in sorted(folder.rglob("*.py")):
            parts = [package, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules that ``name`` imports anywhere in its source (relative imports resolved;
    ``from pkg import sub`` counts as importing ``pkg.sub`` when ``sub`` is a module)."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            candidates = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for candidate in candidates:
            # `import a.b.c` imports a, a.b and a.b.c; the deepest project module is the edge.
            while candidate and candidate not in modules:
                candidate = candidate.rpartition(".")[0]
            if candidate and candidate != name:
                targets.add(candidate)
    return targets


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return components


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    explicit = {name: _imports(name, path, modules) for name, path in modules.items()}
    graph = {name: set(targets) for name, targets in explicit.items()}
    # A package's __init__ runs before any of its modules: importing `a.b` from outside `a` imports
    # `a` first, so that import is an edge to `a` as well. A package __init__ that imports nothing
    # cannot close a cycle, so the edge is only added where the __init__ imports something. Inside
    # `a` the __init__ has run already (or is running: it started that import), so a module's
    # imports of its own package's modules add no edge to `a`, and an __init__ that re-exports its
    # modules does not close a cycle with them; a module that imports through its own package
    # (`from a import x` inside `a`) has that edge in its source, and the cycle shows.
    for name, targets in explicit.items():
        for target in targets:
            package = target.rpartition(".")[0]
            while package in explicit:
                if explicit[package] and not name.startswith(package + "."):
                    graph[name].add(package)
                package = package.rpartition(".")[0]
    return graph


def test_the_walker_finds_a_cycle_through_a_function_level_import(tmp_path):
    # The walker itself: two modules that import each other, one of them inside a function.
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    source = tmp_path / "x.py"
    source.write_text("def f():\n    from contavsep.config import Config\n    from . import storage\n")
    modules = {"contavsep.x": source, "contavsep.config": source, "contavsep.storage": source}
    assert _imports("contavsep.x", source, modules) == {"contavsep.config", "contavsep.storage"}


def test_no_import_cycle_in_either_package():
    graph = import_graph()
    assert len(graph) > 80  # both packages were read
    cycles = _cycles(graph)
    described = [" <-> ".join(component) for component in cycles]
    assert not cycles, "import cycles (imports inside functions included):\n" + "\n".join(described)


def test_every_module_imports_on_its_own_in_a_fresh_process():
    names = sorted(_modules())
    # One process per module would take minutes (torch, ray, mlflow each time); one fresh
    # process imports them in an order where no module is helped by an earlier one's imports
    # of its own package: alphabetical, so a submodule never comes before its package.
    code = (
        "import importlib, sys, traceback\n"
        "failed = []\n"
        "for name in sys.argv[1:]:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception:\n"
        "        failed.append(name + ': ' + traceback.format_exc().strip().splitlines()[-1])\n"
        "print('\\n'.join(failed))\n"
        "sys.exit(1 if failed else 0)\n"
    )
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code, *names], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stdout + out.stderr


LIGHT_STRATEGY = """
from dataclasses import dataclass
from typing import ClassVar

from contavsep.config import StrategyParams, bounded
from contavsep.strategies.base import Strategy


@dataclass(frozen=True)
class LightParams(StrategyParams):
    gain: float = bounded(0.5, at_least=0)


class Light(Strategy):
    name: ClassVar[str] = "light"
    Params: ClassVar[type[StrategyParams]] = LightParams
"""


def test_validating_a_config_imports_torch_only_through_the_chosen_strategys_module(tmp_path):
    # `contavsep config`, space validation and `sweep --check` validate configs on machines and in
    # processes that never train: validation reads lists of allowed values, not the modules. A
    # strategy's keys are declared in its own file (issue 21), so validating strategy.* imports
    # that one module, and torch comes with it only if that module imports it.
    (tmp_path / "light_strategy.py").write_text(LIGHT_STRATEGY)
    code = (
        "import sys, traceback\n"
        f"sys.path.insert(0, {str(tmp_path)!r})\n"
        "first = []\n"
        "class Spy:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch' and not first:\n"
        "            first.extend(f.filename for f in traceback.extract_stack() if '/contavsep/' in f.filename)\n"
        "sys.meta_path.insert(0, Spy())\n"
        "from contavsep.config import make_config, validate\n"
        "from contavsep.registry import STRATEGIES\n"
        "STRATEGIES.register('light', 'light_strategy:Light')\n"
        "over = {'train.decoder_conv': 'subpixel', 'train.channels_last': 'auto', 'model.name': 'coseparation'}\n"
        "validate(make_config('paper', {'strategy.name': 'light', 'strategy.gain': 0.2, **over}))\n"
        "heavy = sorted(m for m in ('torch', 'torchaudio', 'ray', 'mlflow') if m in sys.modules)\n"
        "print('light', heavy)\n"
        "validate(make_config('paper', {'strategy.name': 'lwf', **over}))\n"
        "print('lwf', sorted(m for m in ('ray', 'mlflow') if m in sys.modules), first[-1])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    light, lwf = out.stdout.splitlines()
    assert light == "light []"
    # the import of torch came from the chosen strategy's own module, nothing else of validation
    assert lwf.startswith("lwf [] ") and lwf.endswith("/contavsep/strategies/lwf.py"), lwf
