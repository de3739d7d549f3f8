"""The house's shape: imports go one way, never in a cycle, always at a module's top; every
package says what it holds; every entry point runs; the configs ship with the package."""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from ecomtrain.__main__ import COMMANDS
from ecomtrain.__main__ import main as ecomtrain_main

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("ecomtrain", "tuning")
# The bottom of the house: they import nothing of the project above them.
BOTTOM = {"ecomtrain.config", "ecomtrain.tasks", "ecomtrain.model", "ecomtrain.connect"}
BOTTOM |= {"ecomtrain.files", "ecomtrain.console", "ecomtrain.experts"}
# Entry points: the only modules that may import `tuning` (besides tuning itself) or a CLI;
# the benchmarks' package is all entry points, its modules importing one another.
TUNING_USERS = {"ecomtrain.sweep"}
BENCH = "ecomtrain.bench"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def in_bench(name: str) -> bool:
    return name == BENCH or name.startswith(f"{BENCH}.")


def is_cli(name: str) -> bool:
    return (
        name.endswith("__main__") or name in TUNING_USERS | {"ecomtrain.export"} or in_bench(name)
    )


def project_imports(name: str) -> list[tuple[str, int, bool]]:
    """(imported project module, line, at module top level) of every import in `name`."""
    tree = ast.parse(MODULES[name].read_text(), str(MODULES[name]))
    top = {id(node) for node in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            # `from pkg import mod` imports the module pkg.mod when there is one
            targets = [
                f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module
                for a in node.names
            ]
        else:
            continue
        for target in targets:
            if target.split(".")[0] in PACKAGES:
                while target not in MODULES:  # `import ecomtrain.x.y` of a package attribute
                    target = target.rsplit(".", 1)[0]
                out.append((target, node.lineno, id(node) in top))
    return out


GRAPH = {name: project_imports(name) for name in MODULES}


def test_no_import_cycles():
    """Tarjan's strongly connected components of the module graph are all single modules."""
    index, low, stack, on, cycles = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w, _, _ in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in GRAPH:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_bottom_modules_import_only_the_bottom():
    bad = [
        f"{MODULES[m].relative_to(ROOT)}:{line}: imports {t}"
        for m in BOTTOM
        for t, line, _ in GRAPH[m]
        if t not in BOTTOM
    ]
    assert not bad, "\n".join(bad)


def test_library_never_imports_tuning_or_a_cli():
    bad = []
    for m, imports in GRAPH.items():
        for t, line, _ in imports:
            tuning_ok = m in TUNING_USERS or in_bench(m) or m.startswith("tuning")
            cli_ok = m == "ecomtrain" or (in_bench(m) and in_bench(t))
            if (t.startswith("tuning") and not tuning_ok) or (is_cli(t) and not cli_ok):
                bad.append(f"{MODULES[m].relative_to(ROOT)}:{line}: imports {t}")
    assert not bad, "\n".join(bad)


def test_project_imports_are_at_the_top_of_modules():
    hidden = [
        f"{MODULES[m].relative_to(ROOT)}:{line}: imports {t} inside a function"
        for m, imports in GRAPH.items()
        for t, line, top in imports
        if not top
    ]
    assert not hidden, "\n".join(hidden)


@pytest.mark.parametrize("package", [m for m, p in MODULES.items() if p.name == "__init__.py"])
def test_every_package_says_what_it_holds(package):
    tree = ast.parse(MODULES[package].read_text())
    doc = ast.get_docstring(tree)
    assert doc and len(doc.split()) >= 8, f"{package}: no docstring saying what it holds"
    # every module of the package is named in its docstring
    folder = MODULES[package].parent
    for child in folder.glob("*.py"):
        if child.stem not in ("__init__", "__main__"):
            assert child.stem in doc, f"{package}: docstring does not name {child.stem}"
    # no front door: a package re-exports nothing, every import names the module it uses
    if package != "ecomtrain":  # the top package holds a logging set-up, nothing of its own
        assert all(isinstance(node, ast.Expr) for node in tree.body), (
            f"{package}: its __init__.py holds more than its docstring (import the module)"
        )


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_runs(command, capsys):
    """`ecomtrain COMMAND --help` reaches the command's own parser."""
    with pytest.raises(SystemExit) as exit_:
        ecomtrain_main([command, "--help"])
    assert exit_.value.code == 0
    assert f"python -m {COMMANDS[command].removesuffix('.__main__')}" in capsys.readouterr().out


def test_unknown_command_lists_the_commands(capsys):
    assert ecomtrain_main(["swep"]) == 2
    out = capsys.readouterr()
    assert "unknown command 'swep'" in out.err and "sweep" in out.out


def test_configs_ship_in_the_wheel_and_load_from_anywhere(tmp_path):
    """The built wheel holds configs/ as ecomtrain/configs, and an installed copy finds
    `configs/demo.yaml` from a working directory outside the repository."""
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path / "dist"), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (wheel,) = (tmp_path / "dist").glob("ecomtrain-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        shipped = {p.relative_to(ROOT / "configs") for p in (ROOT / "configs").rglob("*.yaml")}
        assert {f"ecomtrain/configs/{p.as_posix()}" for p in shipped} <= names
        z.extractall(tmp_path / "site")
    away = tmp_path / "elsewhere"
    away.mkdir()
    code = (
        "from ecomtrain.config import CONFIGS, load_config\n"
        "cfg = load_config('configs/demo.yaml')\n"
        "assert load_config('demo.yaml') == cfg == load_config()\n"
        "print(CONFIGS, cfg.sweep.name)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=away,
        env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(tmp_path / "site" / "ecomtrain" / "configs"), "demo"]
