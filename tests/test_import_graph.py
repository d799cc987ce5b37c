"""The package's import graph, read from the source with ast (every ``import lipspace...`` statement, at module
level and inside functions): audio/ never imports av/, the task modules do not import each other (nor does the
library import them), and no cycle runs through module-level imports (between modules or between packages)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted((SRC / "lipspace").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> list[tuple[str, bool]]:
    """(imported lipspace module, whether the import runs at import time) for each import in ``path``; a name
    imported from a package resolves to the submodule of that name where there is one."""
    is_pkg = path.name == "__init__.py"
    out: list[tuple[str, bool]] = []

    def visit(node, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                out.extend((a.name, not in_function) for a in child.names if a.name.split(".")[0] == "lipspace")
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = base[:len(base) - (child.level - 1)]
                    module = ".".join(base + ([child.module] if child.module else []))
                else:
                    module = child.module or ""
                if module.split(".")[0] == "lipspace":
                    out.extend((f"{module}.{a.name}" if f"{module}.{a.name}" in MODULES else module, not in_function)
                               for a in child.names)
            visit(child, in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda))

    visit(ast.parse(path.read_text(), str(path)), False)
    return out


IMPORTS = {name: _imports(name, path) for name, path in MODULES.items()}


def _package(module: str) -> str:
    """``lipspace.audio.features`` -> ``audio``; top-level modules are their own package (``runs``)."""
    return module.split(".")[1] if "." in module else module


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` (as a path that returns to its start), or None."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def dfs(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := dfs(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := dfs(node)):
            return found
    return None


def test_every_module_parses_and_imports_resolve():
    assert "lipspace.audio.features" in MODULES and "lipspace.av.sync" in MODULES
    unknown = {(m, t) for m, imps in IMPORTS.items() for t, _ in imps if t not in MODULES}
    assert not unknown, f"imports of modules that do not exist: {sorted(unknown)}"


def test_audio_never_imports_av():
    """Feature backends that need the sync encoder live in av/ and are registered by their path."""
    bad = sorted((m, t) for m, imps in IMPORTS.items() if _package(m) == "audio"
                 for t, _ in imps if _package(t) == "av")
    assert not bad, f"audio/ imports av/: {bad}"


def test_tasks_do_not_import_each_other():
    """What two tasks share lives outside tasks/ (lipspace.model.build, runs, playback, results_table); workflows that
    chain tasks (the demos) live in lipspace.demo, above them."""
    found = sorted((m, t) for m, imps in IMPORTS.items() if m.startswith("lipspace.tasks.")
                   for t, _ in imps if t.startswith("lipspace.tasks.") and t != m)
    assert not found, f"a task imports another task: {found}"


def test_only_entry_points_and_workflows_import_tasks():
    """The library never reaches up into a task: only the command lines (cli/) and the demo workflow (demo/) do."""
    found = sorted((m, t) for m, imps in IMPORTS.items() if _package(m) not in ("tasks", "cli", "demo")
                   for t, _ in imps if _package(t) == "tasks")
    assert not found, f"library modules import tasks: {found}"


@pytest.mark.parametrize("level", ["module", "package"])
def test_no_cycle_through_module_level_imports(level):
    key = (lambda m: m) if level == "module" else _package
    graph: dict[str, set[str]] = {}
    for m, imps in IMPORTS.items():
        for t, at_import in imps:
            if at_import and key(t) != key(m):
                graph.setdefault(key(m), set()).add(key(t))
    assert _cycle(graph) is None, f"{level}-level import cycle: {' -> '.join(_cycle(graph))}"


def test_cycle_finder_finds_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


# The data flow, bottom to top: each layer may import the layers below it, never one above (a module-level or a
# deferred import alike). data.schema (the dataset format, shared by the stage that writes it and the ones that read
# it) sits below everything but utils; eval (the metric library) sits below model, which uses its video writer and
# LPIPS loss; evaluating a run is the task tasks/evaluate.
LAYERS = ["utils", "data.schema", "audio", "prep", "data", "av", "conditioners", "renderers", "eval", "model",
          "reporting", "tasks", "demo", "cli"]
# Named exceptions, each a call-time import: config validation checks the evaluation block against eval's settings
# schema before training starts rather than after it.
UPWARD_ALLOWED = {("lipspace.utils.config", "lipspace.eval.scoring")}


def _layer(module: str) -> int:
    parts = module.split(".")
    name = "data.schema" if parts[1:3] == ["data", "schema"] else parts[1]
    return LAYERS.index(name)


def test_every_module_lives_in_a_layer():
    """No loose modules at the top of the package: every module belongs to one of the data-flow layers (conf/ holds
    the shipped yaml configs, no code)."""
    loose = sorted(m for m in MODULES if m not in ("lipspace", "lipspace.conf") and m.split(".")[1] not in LAYERS)
    assert not loose, f"modules outside the data-flow layers {LAYERS}: {loose}"


def test_imports_follow_the_data_flow():
    upward = sorted((m, t) for m, imps in IMPORTS.items() if m != "lipspace"
                    for t, _ in imps if t != "lipspace" and _layer(t) > _layer(m) and (m, t) not in UPWARD_ALLOWED)
    assert not upward, f"imports that reach up the data flow {LAYERS}: {upward}"


def test_the_system_and_tasks_call_declared_interfaces_and_never_probe():
    """model/, data/, tasks/, demo/ and cli/ use what the Renderer and Conditioner base classes declare: no
    hasattr / getattr detective work on the objects they drive (inspect.signature neither)."""
    found = []
    for name, path in MODULES.items():
        if name.split(".")[1:2] not in (["model"], ["data"], ["tasks"], ["demo"], ["cli"]):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call):
                fn = node.func
                called = fn.id if isinstance(fn, ast.Name) else fn.attr if isinstance(fn, ast.Attribute) else ""
                if called in ("hasattr", "getattr", "signature", "getfullargspec"):
                    found.append(f"{path.relative_to(SRC)}:{node.lineno} {called}")
    assert not found, f"probing instead of a declared interface: {found}"
