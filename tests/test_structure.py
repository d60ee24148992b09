"""The house's shape, checked: every module imports alone, imports form no circle, and the
arrows between the layers point one way.

The graph is read from the source (``ast``), so it sees every import: at the top of a module,
inside functions (lazy imports are still arrows) and under ``TYPE_CHECKING``. A circle counts
imports that run (top level and inside functions); imports for type hints only are left out
of circles, since they never run, but not out of the layer rules: a lower layer does not even
name a higher one.
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
TESTS = REPO / "tests"

#: Layers, each with the layers it must not import. ``atelier`` is the package root (the
#: version), ``config`` the settings object, ``runtime`` process tuning, ``extras`` the
#: optional-import helper.
FORBIDDEN: dict[str, set[str]] = {
    "art": {"install", "store", "service", "web", "cli", "bench", "config", "runtime"},
    "install": {"store", "service", "web", "cli", "bench", "config"},
    "store": {"art", "install", "service", "web", "cli", "bench"},
    "service": {"web", "cli", "bench"},
    "web": {"cli", "bench"},
    "config": {"art", "install", "store", "service", "web", "cli", "bench"},
}

#: Modules that cannot be imported on their own, and why.
NOT_IMPORTABLE_ALONE = {
    # Alembic's environment script: it runs the migration when imported, inside Alembic only.
    "atelier.store.migrations.env",
}


@dataclass(frozen=True)
class Arrow:
    source: str
    target: str
    line: int
    typing_only: bool


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {_module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def _resolve(name: str) -> str | None:
    """The module of ours that ``name`` (a module or a name inside one) belongs to."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _typing_blocks(tree: ast.AST) -> set[int]:
    """Ids of the import nodes under ``if TYPE_CHECKING:``."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and (
            (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING")
            or (isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING")
        ):
            for child in node.body:
                for sub in ast.walk(child):
                    inside.add(id(sub))
    return inside


def arrows_of(module: str) -> Iterator[Arrow]:
    path = MODULES[module]
    tree = ast.parse(path.read_text(), str(path))
    typing_only = _typing_blocks(tree)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            # "from atelier.cli import render" names a module; "from x import y" a name in x.
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        for target in targets:
            if not target.startswith("atelier"):
                continue
            found = _resolve(target)
            if found and found != module:
                yield Arrow(module, found, node.lineno, id(node) in typing_only)


ARROWS: list[Arrow] = [arrow for module in MODULES for arrow in arrows_of(module)]


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "atelier"


def test_arrows_between_layers_point_down() -> None:
    upward = [
        f"{a.source}:{a.line} imports {a.target}" + (" (for type hints)" if a.typing_only else "")
        for a in ARROWS
        if layer(a.target) in FORBIDDEN.get(layer(a.source), set())
    ]
    assert not upward, "imports that point up:\n" + "\n".join(upward)


def test_inside_art_the_building_blocks_import_no_engine() -> None:
    wrong = [
        f"{a.source}:{a.line} imports {a.target}"
        for a in ARROWS
        if a.source.startswith("atelier.art.blocks") and a.target.startswith("atelier.art.engines")
    ]
    assert not wrong, "\n".join(wrong)


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_import_circles() -> None:
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    for a in ARROWS:
        if not a.typing_only:
            edges[a.source].add(a.target)
    assert _cycles(edges) == []


def test_the_circle_finder_finds_a_circle() -> None:
    # The check above must be able to fail.
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_tests_edit_no_import_path() -> None:
    """Tests share helpers through the ``tests`` package (``tests.store.store_fixtures``), never
    by putting folders on ``sys.path``: which module a bare name means would then depend on what
    pytest loaded first."""
    edit = re.compile(r"\bsys\.path\.(insert|append|extend)\(|\bsys\.path\s*[+]?=")
    edits = [
        f"{path.relative_to(REPO)}:{number}"
        for path in sorted(TESTS.rglob("*.py"))
        if path != Path(__file__)
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if edit.search(line)
    ]
    assert not edits, "\n".join(edits)


def test_every_import_of_ours_resolves() -> None:
    """Every ``from atelier... import name`` (and ``from tests...``) in src/ and tests/, also the
    ones inside functions that only run on some path, names something that exists."""
    missing = []
    checked: dict[tuple[str, str], bool] = {}
    for path in sorted([*SRC.rglob("*.py"), *TESTS.rglob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (isinstance(node, ast.ImportFrom) and node.level == 0 and node.module):
                continue
            if node.module.split(".")[0] not in ("atelier", "tests"):
                continue
            for alias in node.names:
                key = (node.module, alias.name)
                if key not in checked:
                    checked[key] = _exists(*key)
                if not checked[key]:
                    missing.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.module}.{alias.name}")
    assert not missing, "\n".join(missing)


def _exists(module: str, name: str) -> bool:
    try:
        found = importlib.import_module(module)
    except ImportError:
        return False
    if name == "*" or hasattr(found, name):
        return True
    try:
        importlib.import_module(f"{module}.{name}")
    except ImportError:
        return False
    return True


#: Runs in a fresh interpreter that has imported nothing of ours: it imports the third-party
#: packages our modules name (torch alone takes seconds), then forks once per module of ours
#: and imports that module alone in the child, reporting one JSON line per module. Forking
#: keeps "alone" for our modules (none is loaded before the fork) without paying torch's
#: import 250 times, which on two busy cores took longer than the test's timeout.
_IMPORT_ALONE = r"""
import importlib, json, os, sys
for name in json.loads(sys.argv[1]):
    try:
        importlib.import_module(name)
    except Exception:
        pass  # an optional package that is not installed: the module that needs it will say so
assert not any(m == "atelier" or m.startswith("atelier.") for m in sys.modules), "a package imported ours"
for line in sys.stdin:
    name = line.strip()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        code, message = 0, ""
        try:
            importlib.import_module(name)
        except BaseException as exc:
            code, message = 1, f"{type(exc).__name__}: {exc}"
        os.write(write, message.encode()[:4000])
        os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        message = pipe.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    print(json.dumps({"module": name, "code": code, "message": message}), flush=True)
"""


def _third_party_imports() -> list[str]:
    """The modules outside ours that our modules import at their top level."""
    names: set[str] = set()
    for path in MODULES.values():
        for node in ast.parse(path.read_text(), str(path)).body:
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module)
    return sorted(n for n in names if n.split(".")[0] not in ("atelier", "__future__"))


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "fork"), reason="forks a clean interpreter per module")
def test_every_module_imports_alone_in_a_fresh_interpreter() -> None:
    """No module works only because another of ours was imported first (a circle broken by
    luck, a missing import hidden by the test run's earlier imports)."""
    names = sorted(set(MODULES) - NOT_IMPORTABLE_ALONE)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_ALONE, json.dumps(_third_party_imports())],
        input="\n".join(names) + "\n", env=env, capture_output=True, text=True, timeout=540, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    results = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert [r["module"] for r in results] == names  # every module was tried
    failures = [f"{r['module']}: {r['message'] or 'exit code ' + str(r['code'])}" for r in results if r["code"]]
    assert not failures, "\n".join(failures)


#: What builds SQL in SQLAlchemy: statements, clauses and SQL functions. Outside ``store/`` a
#: module may name the ``Engine`` and ``Session`` types, catch ``sqlalchemy.exc`` errors, and
#: ``get``/``add`` ORM objects inside ``store.db.transaction``; the queries themselves live in
#: store modules under names that say what they ask.
SQL_BUILDERS = {
    "select", "insert", "update", "delete", "text", "func", "case", "and_", "or_", "not_", "desc",
    "asc", "exists", "literal", "literal_column", "bindparam", "union", "union_all", "values",
    "column", "table", "true", "false", "null", "tuple_", "cast",
}
#: Methods that run SQL (or hand back a query) on a connection or session.
SQL_RUNNERS = {"execute", "scalars", "scalar", "exec_driver_sql", "query"}
#: SQL statement text at the start of a string.
SQL_TEXT = re.compile(r"^\s*(SELECT|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|WITH\s+\w+\s+AS|PRAGMA|CREATE|DROP|ALTER|LISTEN|NOTIFY)\b")
#: Modules outside store/ still holding SQL, each with who moves it. Empty is the aim; the
#: test below also fails when a listed module is clean (take it off the list).
SQL_NOT_YET_MOVED: dict[str, str] = {}


def _docstrings(tree: ast.AST) -> set[int]:
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                found.add(id(first.value))
    return found


def sql_in(source: str, name: str = "<source>") -> list[str]:
    """Where ``source`` builds, runs or spells SQL: one line per place."""
    tree = ast.parse(source, name)
    docstrings = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "sqlalchemy":
            builders = [a.name for a in node.names if a.name in SQL_BUILDERS]
            if builders:
                found.append(f"{node.lineno}: imports {', '.join(builders)} from {node.module}")
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in ("sqlalchemy", "sa"):
            if node.attr in SQL_BUILDERS:
                found.append(f"{node.lineno}: {node.value.id}.{node.attr}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in SQL_RUNNERS:
            found.append(f"{node.lineno}: .{node.func.attr}(...)")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            if SQL_TEXT.match(node.value):
                found.append(f"{node.lineno}: SQL text {node.value[:40]!r}")
    return sorted(found, key=lambda place: int(place.split(":")[0]))


def test_no_sql_outside_store() -> None:
    """Queries live in ``store/`` under names that say what they ask (issue 13): a reader finds
    every statement the product runs in one package, and the service reads as verbs."""
    outside = {
        module: sql_in(path.read_text(), str(path))
        for module, path in MODULES.items()
        if layer(module) != "store" and module != "atelier.store"
    }
    offenders = {m: places for m, places in outside.items() if places and m not in SQL_NOT_YET_MOVED}
    assert not offenders, "SQL outside store/:\n" + "\n".join(
        f"{m}:{p}" for m, places in sorted(offenders.items()) for p in places
    )
    clean = sorted(m for m in SQL_NOT_YET_MOVED if not outside.get(m))
    assert not clean, f"no SQL left in {', '.join(clean)}: take them off SQL_NOT_YET_MOVED"


def test_the_sql_finder_finds_sql() -> None:
    # The check above must be able to fail, on each kind of SQL it looks for.
    source = '''
"""SELECT in a docstring is prose."""
from sqlalchemy import Engine, select
from sqlalchemy.exc import OperationalError
import sqlalchemy as sa

def f(session, engine: Engine):
    session.get(Thing, 1)
    session.execute(sa.update(Thing))
    engine.connect().exec_driver_sql("SELECT 1")
    return "DELETE FROM things", "Update your photo"
'''
    places = sql_in(source)
    assert [p.split(":")[0] for p in places] == ["3", "9", "9", "10", "10", "11"], places
