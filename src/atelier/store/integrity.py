"""Is the database file whole? SQLite's own checks, worded for the operator.

A SQLite file can be damaged by a disk, a copy taken while it was written, or a hand that
edited it. Three places look, from cheap to thorough:

* **At start** (:func:`check_database_file`): the file's header and its schema page. A file
  that is not a database stops ``atelier serve`` / ``atelier worker`` with one line naming the
  file and what to do, instead of a traceback from the first query.
* **While running** (:func:`damage_of`, used by /readyz): ``PRAGMA quick_check(1)`` -- every
  page's b-tree structure, without cross-checking the indexes against the tables -- at most once
  a minute per engine (milliseconds for the databases this product keeps; the answer is reused
  between probes), and at once whenever a request met a damaged page (:func:`note_damage`).
* **On demand** (:func:`report`, ``atelier db check``): ``PRAGMA integrity_check`` (everything,
  indexes included) and a summary: size, pages, journal mode, schema revision, rows per table.

PostgreSQL checks its own pages; these functions say so and check nothing there.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError

from atelier.store.errors import DatabaseDamagedError

#: The first 16 bytes of every SQLite 3 database file.
SQLITE_HEADER = b"SQLite format 3\x00"
#: Seconds a quick_check's answer is reused by /readyz.
QUICK_CHECK_SECONDS = 60.0
#: The most problems integrity_check lists.
MAX_PROBLEMS = 20


def sqlite_path(url: str) -> Path | None:
    """The file of an SQLite URL (None for PostgreSQL, memory or URI databases)."""
    parsed = make_url(url)
    database = parsed.database or ""
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database).expanduser()


def advice(path: Path | str, reason: str) -> str:
    """The one line an operator gets about a damaged file: which, why, what to do."""
    return (
        f"the database file {path} is damaged ({reason}): stop Atelier and restore it from a backup "
        f"(SECURITY.md, 'Backups'), then run `atelier reconcile`; `atelier db check` shows what is wrong"
    )


def is_damage(exc: BaseException) -> bool:
    """Whether ``exc`` (a SQLAlchemy or sqlite3 error) says the file is damaged: SQLITE_CORRUPT
    (``database disk image is malformed``) or SQLITE_NOTADB (``file is not a database``)."""
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    if not isinstance(orig, sqlite3.DatabaseError):
        return False
    name = str(getattr(orig, "sqlite_errorname", ""))
    return name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or "malformed" in str(orig) or "not a database" in str(orig)


def _header_problem(path: Path) -> str | None:
    try:
        with open(path, "rb") as stream:
            head = stream.read(100)
    except FileNotFoundError:
        return None
    if not head:
        return None  # an empty file: SQLite makes a database of it
    if not head.startswith(SQLITE_HEADER):
        return "its header is not SQLite's: file is not a database"
    return None


def check_database_file(url: str) -> None:
    """At start: refuse a SQLite file that is not a database, or whose schema cannot be read,
    with :class:`DatabaseDamagedError` (one line, :func:`advice`). Nothing is checked for
    PostgreSQL, nor for a file that does not exist yet (it is created)."""
    path = sqlite_path(url)
    if path is None or not path.exists():
        return
    problem = _header_problem(path)
    if problem is None:
        try:
            with sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True) as conn:
                conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.DatabaseError as exc:
            if not is_damage(exc):
                raise
            problem = str(exc)
    if problem is not None:
        raise DatabaseDamagedError(advice(path, problem))


# ------------------------------------------------------------------------------------------------
# while running


@dataclass
class _Health:
    checked_at: float = -1e18
    damage: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


_HEALTH: weakref.WeakKeyDictionary[Engine, _Health] = weakref.WeakKeyDictionary()
_HEALTH_LOCK = threading.Lock()


def _health(engine: Engine) -> _Health:
    with _HEALTH_LOCK:
        if engine not in _HEALTH:
            _HEALTH[engine] = _Health()
        return _HEALTH[engine]


def ping(engine: Engine) -> None:
    """Ask the database the smallest question (``SELECT 1``); raises what it raises when away."""
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))


def note_damage(engine: Engine, exc: BaseException) -> str:
    """A request met a damaged page: remember it (readiness turns 503 at once); the advice line."""
    health = _health(engine)
    reason = str(exc.orig if isinstance(exc, DBAPIError) else exc).strip().splitlines()[0]
    health.damage = reason
    health.checked_at = time.monotonic()
    return advice(sqlite_path(str(engine.url)) or engine.url.database or "?", reason)


def damage_of(engine: Engine, *, now: float | None = None) -> str | None:
    """What is damaged in ``engine``'s SQLite file (None when whole, and always for
    PostgreSQL): ``quick_check(1)``, reused for :data:`QUICK_CHECK_SECONDS`."""
    if engine.dialect.name != "sqlite":
        return None
    health = _health(engine)
    now = time.monotonic() if now is None else now
    with health.lock:
        if now - health.checked_at < QUICK_CHECK_SECONDS:
            return health.damage
        try:
            with engine.connect() as conn:
                rows = [str(r[0]) for r in conn.execute(text("PRAGMA quick_check(1)"))]
            health.damage = None if rows == ["ok"] else "; ".join(rows)
        except DBAPIError as exc:
            if not is_damage(exc):
                raise
            health.damage = str(exc.orig).strip().splitlines()[0]
        health.checked_at = now
        return health.damage


# ------------------------------------------------------------------------------------------------
# atelier db check


@dataclass(frozen=True)
class Report:
    """What ``atelier db check`` found."""

    where: str
    backend: str
    facts: dict[str, Any]
    tables: dict[str, int | str]  # rows, or why they cannot be counted
    problems: list[str]  # empty: whole
    checked: bool  # False: nothing was checked (PostgreSQL)

    @property
    def damaged(self) -> bool:
        return bool(self.problems) or any(isinstance(v, str) for v in self.tables.values())


def report(url: str) -> Report:
    """Open the database read-only and check everything SQLite can check."""
    if make_url(url).get_backend_name() != "sqlite":
        return _postgres_report(url)
    path = sqlite_path(url)
    if path is None:
        return Report(url, "sqlite", {"file": "none (an in-memory database)"}, {}, [], False)
    if not path.exists():
        return Report(str(path), "sqlite", {"file": "does not exist (it is created at the first start)"}, {}, [], True)
    facts: dict[str, Any] = {"size": f"{path.stat().st_size / 2**20:.2f} MiB"}
    header = _header_problem(path)
    if header is not None:
        return Report(str(path), "sqlite", facts, {}, [header], True)
    tables: dict[str, int | str] = {}
    problems: list[str] = []
    try:
        with sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True) as conn:
            for pragma in ("page_size", "page_count", "freelist_count", "journal_mode"):
                facts[pragma] = conn.execute(f"PRAGMA {pragma}").fetchone()[0]
            try:
                facts["schema revision"] = conn.execute("SELECT version_num FROM alembic_version").fetchone()[0]
            except sqlite3.DatabaseError as exc:
                facts["schema revision"] = f"unknown ({exc})"
            names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
            for name in names:
                try:
                    tables[name] = int(conn.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0])
                except sqlite3.DatabaseError as exc:
                    tables[name] = f"cannot be read: {exc}"
            rows = [str(r[0]) for r in conn.execute(f"PRAGMA integrity_check({MAX_PROBLEMS})")]
            problems = [] if rows == ["ok"] else rows
    except sqlite3.DatabaseError as exc:
        problems.append(str(exc))
    return Report(str(path), "sqlite", facts, tables, problems, True)


def _postgres_report(url: str) -> Report:
    from atelier.store.db import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            facts: dict[str, Any] = {"server": conn.execute(text("SHOW server_version")).scalar()}
            try:
                facts["schema revision"] = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
            except DBAPIError:
                facts["schema revision"] = "none (not migrated)"
                conn.rollback()
            names = [r[0] for r in conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY tablename"))]
            tables: dict[str, int | str] = {n: int(conn.execute(text(f'SELECT count(*) FROM "{n}"')).scalar() or 0) for n in names}
    finally:
        engine.dispose()
    where = make_url(url).render_as_string(hide_password=True)
    return Report(where, "postgresql", facts, tables, [], False)
