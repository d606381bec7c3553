"""The house rules of the code base, checked on every run: `python -m pytest tests/test_layout.py`.

- no import cycle among pipeline/, targets/ and calibration/ modules, counting imports inside functions
  (only `if TYPE_CHECKING:` imports, which never run, are left out);
- layering one way: edgepipe -> pipeline -> targets -> calibration; calibration imports no ML framework;
- no module over 400 lines, no function over 50 lines; a docstring atop every package and module (bench/
  included);
- no function over 7 parameters (self and cls not counted, *args and **kwargs counted): what travels together
  goes as a frozen request or options object;
- no private name imported from another module;
- no report entry built as a dict in pipeline/ (`entry["key"] = ...`): target entries are the schema's frozen
  types (pipeline/report/schema.py), changed with model_copy.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("edgepipe", "pipeline", "targets", "calibration")
ML = {"tensorflow", "keras", "onnx", "onnxruntime", "openvino", "nncf", "ai_edge_litert", "tflite_runtime", "torch"}


def _modname(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_modname(f): f for p in PACKAGES for f in sorted((ROOT / p).rglob("*.py"))}
BENCH = {_modname(f): f for f in sorted((ROOT / "bench").rglob("*.py"))}  # sizes and docstrings only
MAX_PARAMETERS = 7


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node except those under `if TYPE_CHECKING:`."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))


def _imports(mod: str) -> Iterator[tuple[str, str]]:
    """(imported module, imported name or '') for every run-time import of `mod`, resolved."""
    path = MODULES[mod]
    package = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, ""
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            for a in node.names:
                yield (f"{target}.{a.name}", "") if f"{target}.{a.name}" in MODULES else (target, a.name)


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for mod in MODULES:
        deps = set()
        for target, _ in _imports(mod):
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != mod and not mod.startswith(target + "."):  # a parent package's __init__
                deps.add(target)
        graph[mod] = deps
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    x = stack.pop()
                    comp.append(x)
                    if x == v:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def test_the_checker_sees_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles() -> None:
    assert not _cycles(_graph())


@pytest.mark.parametrize("mod", sorted(MODULES))
def test_layering(mod: str) -> None:
    tops = {t.split(".")[0] for t, _ in _imports(mod)}
    if not mod.startswith("edgepipe"):
        assert "edgepipe" not in tops, f"{mod} imports edgepipe (the public face sits on top)"
    if mod.startswith("targets"):
        assert "pipeline" not in tops, f"{mod} imports pipeline"
    if mod.startswith("calibration"):
        assert not tops & ({"pipeline", "targets"} | ML), f"{mod} imports {tops & ({'pipeline', 'targets'} | ML)}"


@pytest.mark.parametrize("mod", sorted(MODULES | BENCH))
def test_sizes_and_docstrings(mod: str) -> None:
    source = (MODULES | BENCH)[mod].read_text()
    tree = ast.parse(source)
    assert len(source.splitlines()) <= 400, f"{mod}: {len(source.splitlines())} lines"
    assert ast.get_docstring(tree), f"{mod}: no module docstring"
    long = [f"{n.name} ({n.end_lineno - n.lineno + 1} lines)" for n in ast.walk(tree)
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and (n.end_lineno or 0) - n.lineno + 1 > 50]
    assert not long, f"{mod}: functions over 50 lines: {long}"


def _parameters(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """How many parameters a caller may pass: every named one but a leading self or cls, *args and **kwargs."""
    a = fn.args
    names = [p.arg for p in (*a.posonlyargs, *a.args, *a.kwonlyargs)]
    bound = 1 if names and names[0] in ("self", "cls") else 0
    return len(names) - bound + (a.vararg is not None) + (a.kwarg is not None)


def test_the_checker_counts_parameters() -> None:
    tree = ast.parse("class C:\n    def m(self, a, /, b, *c, d, **e): ...\n    @classmethod\n    def k(cls, x): ...\n"
                     "def f(x, y=2): ...\n")
    counts = {n.name: _parameters(n) for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    assert counts == {"m": 5, "k": 1, "f": 2}


@pytest.mark.parametrize("mod", sorted(MODULES))
def test_no_long_parameter_lists(mod: str) -> None:
    tree = ast.parse(MODULES[mod].read_text())
    long = [f"{n.name} (line {n.lineno}: {_parameters(n)})" for n in ast.walk(tree)
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and _parameters(n) > MAX_PARAMETERS]
    assert not long, f"{mod}: functions over {MAX_PARAMETERS} parameters (group them in a frozen dataclass): {long}"


@pytest.mark.parametrize("mod", sorted(MODULES))
def test_no_private_names_across_modules(mod: str) -> None:
    borrowed = [f"{t}.{n}" for t, n in _imports(mod) if n.startswith("_") and not n.startswith("__")
                and t.split(".")[0] in PACKAGES and t != mod]
    tree = ast.parse(MODULES[mod].read_text())
    ours = {a.asname or a.name.rpartition(".")[2] for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
            for a in n.names if any(t == m or t.endswith("." + a.name) for t, _ in _imports(mod) for m in MODULES)}
    ours &= {m.rpartition(".")[2] for m in MODULES}  # names bound to one of our modules by an import
    attrs = [f"{node.value.id}.{node.attr}" for node in ast.walk(tree)
             if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in ours
             and node.attr.startswith("_") and not node.attr.startswith("__")]
    assert not borrowed and not attrs, f"{mod} uses private names of other modules: {borrowed + attrs}"


def _entry_key_assignments(source: str) -> list[str]:
    """`entry["key"] = ...` (or `+=`): a key set on a dict named entry."""
    found = []
    for node in ast.walk(ast.parse(source)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] \
            if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else []
        found += [f"line {t.lineno}: {ast.unparse(t)}" for t in targets
                  if isinstance(t, ast.Subscript) and isinstance(t.value, ast.Name) and t.value.id == "entry"
                  and isinstance(t.slice, ast.Constant) and isinstance(t.slice.value, str)]
    return found


def test_the_checker_sees_entry_key_assignments() -> None:
    assert _entry_key_assignments('entry["passed"] = True\nentry["notes"] += ["x"]\nother["a"] = 1\n'
                                  'entry.update(a=1)\n') == ['line 1: entry[\'passed\']', 'line 2: entry[\'notes\']']


@pytest.mark.parametrize("mod", sorted(m for m in MODULES if m.startswith("pipeline")))
def test_no_entry_built_as_a_dict(mod: str) -> None:
    found = _entry_key_assignments(MODULES[mod].read_text())
    assert not found, f"{mod}: a report entry set as a dict (build a schema type, change it with model_copy): {found}"
