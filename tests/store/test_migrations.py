"""The migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
import sqlalchemy as sa
from sqlalchemy import Column, Engine, MetaData, String, inspect, select

from atelier.store.db import Base, Job, OutboxEmail, UTCDateTime, make_engine, transaction
from atelier.store.migrations import (
    current_revision,
    downgrade,
    head_revision,
    is_up_to_date,
    upgrade,
)
from tests.store.store_fixtures import BACKENDS


@pytest.fixture(params=BACKENDS)
def empty_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An engine on a database with nothing in it."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'empty.db'}"
    else:
        url = request.getfixturevalue("fresh_postgres_url")
    engine = make_engine(url)
    yield engine
    engine.dispose()


def _differences(engine: Engine, metadata: MetaData) -> list:  # type: ignore[type-arg]
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        return list(compare_metadata(context, metadata))


def test_the_migrations_produce_exactly_the_models_schema(empty_engine: Engine) -> None:
    assert current_revision(empty_engine) is None
    upgrade(empty_engine)
    assert current_revision(empty_engine) == head_revision()
    assert is_up_to_date(empty_engine)
    assert _differences(empty_engine, Base.metadata) == []


def test_the_schema_comparison_would_notice_a_difference(empty_engine: Engine) -> None:
    # A control for the test above: a model change without a migration is caught.
    upgrade(empty_engine)
    changed = MetaData(naming_convention=Base.metadata.naming_convention)
    for table in Base.metadata.sorted_tables:
        table.to_metadata(changed)
    changed.tables["jobs"].append_column(Column("worker_note", String(50)))
    changed.tables["uploads"].c.width.type = String(10)
    diffs = _differences(empty_engine, changed)
    kinds = {d[0] if isinstance(d, tuple) else d[0][0] for d in diffs}
    assert "add_column" in kinds and "modify_type" in kinds


def test_upgrade_is_idempotent_and_downgrade_empties_the_database(empty_engine: Engine) -> None:
    upgrade(empty_engine)
    upgrade(empty_engine)
    assert set(Base.metadata.tables) <= set(inspect(empty_engine).get_table_names())
    downgrade(empty_engine, "base")
    assert set(inspect(empty_engine).get_table_names()) <= {"alembic_version"}
    upgrade(empty_engine)
    assert _differences(empty_engine, Base.metadata) == []



def test_mails_waiting_in_the_outbox_get_their_job_when_mail_moves_onto_the_queue(empty_engine: Engine) -> None:
    # 0007: the outbox kept its own schedule (next_attempt_at); a mail pending or being sent at
    # the upgrade must still go out, so each gets a mail.send job due when its try was.
    upgrade(empty_engine, "0006")
    due = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)
    outbox = sa.table(
        "outbox", *(sa.column(c) for c in ("id", "dedupe_key", "to_addr", "subject", "text_body", "status", "attempts")),
        sa.column("next_attempt_at", UTCDateTime()), sa.column("created_at", UTCDateTime()),
    )
    with empty_engine.begin() as conn:
        for n, status in enumerate(["pending", "sending", "sent", "dead"], 1):
            conn.execute(outbox.insert().values(
                id=n, dedupe_key=f"k{n}", to_addr="ana@example.com", subject="s", text_body="t", status=status,
                attempts=n - 1, next_attempt_at=due + timedelta(minutes=n), created_at=due,
            ))
    upgrade(empty_engine)
    with transaction(empty_engine, read_only=True) as session:
        jobs = session.scalars(select(Job).order_by(Job.id)).all()
        rows = session.scalars(select(OutboxEmail).order_by(OutboxEmail.id)).all()
    assert [(j.kind, j.payload, j.status, j.run_at) for j in jobs] == [
        ("mail.send", {"outbox_id": 1}, "queued", due + timedelta(minutes=1)),
        ("mail.send", {"outbox_id": 2}, "queued", due + timedelta(minutes=2)),
    ]
    assert [(r.status, r.attempts) for r in rows] == [("pending", 0), ("pending", 1), ("sent", 2), ("dead", 3)]
    assert _differences(empty_engine, Base.metadata) == []
