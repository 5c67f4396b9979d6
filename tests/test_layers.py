"""The layers of the source tree, read from its imports (an `ast` walk, nothing is imported).

- `runtime/`'s root is the vocabulary (messages, errors, …) and the two loops; it never
  reaches up into `supervise/`, `cli/` or `bench/`.
- transports, robots and policies import only the runtime vocabulary.
- only the CLI imports `cli` and `bench` (and bench its own modules).
- no two modules import each other, directly or around a loop, when imported.

The layer rules count imports inside functions too (they run, only later). The cycle rule
counts what runs at import time: a factory that imports the concrete module it was asked
for inside the function (`make_policy` → `policies.lerobot`, whose classes subclass
`Policy`) is the registry pattern, not a cycle. Imports under `if TYPE_CHECKING:` never count.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROOTS = ("runtime", "transports", "robots", "policies")
VOCABULARY = {
    f"asyncinf.runtime.{name}"
    for name in (
        "messages",
        "errors",
        "registry",
        "config",
        "rate",
        "stats",
        "images",
        "testing",
        "lerobot",
        "logs",
        "rtc",  # the delay estimator and prefix weights a policy may use for its RTC hook
        "records",  # dataclasses as JSON and back, for what crosses a process boundary
    )
}
UPPER = ("asyncinf.runtime.supervise", "asyncinf.runtime.cli", "asyncinf.runtime.bench")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(("asyncinf", *parts))


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for root in ROOTS for p in sorted((ROOT / root).rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, known: set[str], *, deferred: bool) -> set[str]:
    """Our modules that `tree` imports (with `deferred`, inside functions too);
    `from pkg import mod` names the module `pkg.mod`."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if not deferred and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in known else node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {m for m in found if m in known}


def _graph(*, deferred: bool = True) -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {
        name: _imports(ast.parse(path.read_text(encoding="utf-8")), known, deferred=deferred)
        - {name}
        for name, path in modules.items()
    }


def _under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_the_walk_sees_the_tree():
    graph = _graph()
    assert "asyncinf.runtime.supervise.supervisor" in graph
    assert "asyncinf.runtime.messages" in graph["asyncinf.runtime.client"]


def test_transports_robots_and_policies_import_only_the_runtime_vocabulary():
    wrong = {
        (module, target)
        for module, targets in _graph().items()
        if not _under(module, "asyncinf.runtime")
        for target in targets
        if _under(target, "asyncinf.runtime") and target not in VOCABULARY
    }
    assert wrong == set()


def test_the_runtime_root_never_imports_the_layers_above_it():
    wrong = {
        (module, target)
        for module, targets in _graph().items()
        if _under(module, "asyncinf.runtime") and not any(_under(module, u) for u in UPPER)
        for target in targets
        if any(_under(target, u) for u in UPPER)
    }
    assert wrong == set()


def test_only_the_cli_imports_cli_and_bench():
    def allowed(module: str, target: str) -> bool:
        if _under(module, "asyncinf.runtime.cli"):
            return True
        return _under(target, "asyncinf.runtime.bench") and _under(module, "asyncinf.runtime.bench")

    wrong = {
        (module, target)
        for module, targets in _graph().items()
        for target in targets
        if (_under(target, "asyncinf.runtime.cli") or _under(target, "asyncinf.runtime.bench"))
        and not allowed(module, target)
    }
    assert wrong == set()


def test_no_import_cycles():
    graph = _graph(deferred=False)
    cycles = []
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []

    def strongconnect(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in graph:
        if v not in index:
            strongconnect(v)
    assert cycles == []
