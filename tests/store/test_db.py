"""Engines, transactions and the models' own rules, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import IntegrityError, OperationalError, StatementError

from atelier.store.db import (
    Artwork,
    OutboxEmail,
    ProcessedEvent,
    Sale,
    Upload,
    make_engine,
    new_token,
    transaction,
)
from atelier.store.migrations import upgrade


def _sqlite(tmp_path: Path, **kwargs: int) -> Engine:
    engine = make_engine(f"sqlite:///{tmp_path / 'sub' / 'atelier.db'}", **kwargs)
    upgrade(engine)
    return engine


def test_sqlite_runs_in_wal_with_foreign_keys_and_a_busy_timeout(tmp_path: Path) -> None:
    engine = _sqlite(tmp_path)  # the folder is created too
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
    engine.dispose()


def test_sqlite_write_transactions_take_the_write_lock_at_begin(tmp_path: Path) -> None:
    engine = _sqlite(tmp_path, busy_timeout_ms=200)
    holding, release = threading.Event(), threading.Event()

    def writer() -> None:
        with transaction(engine) as session:
            session.execute(select(1))  # no write yet: BEGIN IMMEDIATE already holds the lock
            holding.set()
            release.wait(10)

    thread = threading.Thread(target=writer)
    thread.start()
    assert holding.wait(10)
    try:
        # A second writer waits busy_timeout at BEGIN, then gives up cleanly: nothing half-done.
        start = time.monotonic()
        with pytest.raises(OperationalError, match="locked"), transaction(engine) as session:
            session.execute(select(1))
        assert time.monotonic() - start >= 0.15
        # Readers are not blocked (WAL): a read-only transaction goes ahead at once.
        with transaction(engine, read_only=True) as session:
            assert session.scalar(select(func.count()).select_from(Upload)) == 0
    finally:
        release.set()
        thread.join()
    engine.dispose()


def test_a_transaction_commits_on_success_and_rolls_back_on_error(engine: Engine) -> None:
    with transaction(engine) as session:
        session.add(OutboxEmail(to_addr="a@example.com", subject="Hola", text_body="..."))
    with pytest.raises(ZeroDivisionError), transaction(engine) as session:
        session.add(OutboxEmail(to_addr="b@example.com", subject="Hello", text_body="..."))
        session.flush()
        1 / 0  # noqa: B018
    with transaction(engine, read_only=True) as session:
        assert session.scalars(select(OutboxEmail.to_addr)).all() == ["a@example.com"]


def test_timestamps_are_stored_in_utc_and_naive_ones_are_refused(engine: Engine) -> None:
    madrid = timezone(timedelta(hours=1))
    with transaction(engine) as session:
        upload = Upload(
            kind="content",
            blob_key="uploads/2026/11/a.jpg",
            sha256="0" * 64,
            content_type="image/jpeg",
            size=10,
            temporary=True,
            expires_at=datetime(2026, 11, 21, 13, 30, tzinfo=madrid),
        )
        session.add(upload)
    with transaction(engine, read_only=True) as session:
        stored = session.scalar(select(Upload.expires_at))
    assert stored == datetime(2026, 11, 21, 12, 30, tzinfo=UTC) and stored.tzinfo is UTC
    with pytest.raises(StatementError, match="naive"), transaction(engine) as session:
        session.add(OutboxEmail(to_addr="a@example.com", subject="s", text_body="t", sent_at=datetime(2026, 1, 1)))


def test_artworks_get_distinct_unguessable_tokens(engine: Engine) -> None:
    with transaction(engine) as session:
        artworks = [Artwork(owner_email=f"{i}@example.com", locale="en", style="starry") for i in range(20)]
        session.add_all(artworks)
    tokens = [a.preview_token for a in artworks] + [a.download_token for a in artworks]
    assert len(set(tokens)) == 40
    assert all(len(t) == 32 for t in tokens)  # 24 random bytes, URL-safe base64
    assert len(new_token()) == 32
    with transaction(engine, read_only=True) as session:
        found = session.scalar(select(Artwork).where(Artwork.preview_token == artworks[7].preview_token))
    assert found is not None and found.owner_email == "7@example.com"
    assert found.parameters == {} and found.status == "ordered"


def test_a_webhook_event_can_be_processed_only_once(engine: Engine) -> None:
    with transaction(engine) as session:
        session.add(ProcessedEvent(provider="stripe", event_id="evt_1", event_type="checkout.session.completed"))
    with pytest.raises(IntegrityError), transaction(engine) as session:
        session.add(ProcessedEvent(provider="stripe", event_id="evt_1"))
    with transaction(engine) as session:
        session.add(ProcessedEvent(provider="demo", event_id="evt_1"))  # another provider's id space


def test_a_sale_reference_is_unique_per_provider(engine: Engine) -> None:
    with transaction(engine) as session:
        artwork = Artwork(owner_email="a@example.com", locale="en", style="starry")
        session.add(artwork)
        session.flush()
        session.add(Sale(artwork_id=artwork.id, amount_minor=1500, currency="EUR", provider="stripe", provider_ref="cs_1"))
    with pytest.raises(IntegrityError), transaction(engine) as session:
        session.add(Sale(artwork_id=artwork.id, amount_minor=900, currency="EUR", provider="stripe", provider_ref="cs_1"))


def test_an_email_with_the_same_dedupe_key_is_queued_once(engine: Engine) -> None:
    with transaction(engine) as session:
        session.add(OutboxEmail(dedupe_key="artwork:1:preview", to_addr="a@example.com", subject="s", text_body="t"))
    with pytest.raises(IntegrityError), transaction(engine) as session:
        session.add(OutboxEmail(dedupe_key="artwork:1:preview", to_addr="a@example.com", subject="s", text_body="t"))
    with transaction(engine) as session:  # mails without a key are not deduplicated
        session.add_all([OutboxEmail(to_addr="a@example.com", subject="s", text_body="t") for _ in range(2)])


def test_foreign_keys_are_enforced(engine: Engine) -> None:
    with pytest.raises(IntegrityError), transaction(engine) as session:
        session.add(Sale(artwork_id=999, amount_minor=1, currency="EUR", provider="demo", provider_ref="x"))


def test_deleting_an_upload_leaves_its_artwork_without_it(engine: Engine) -> None:
    with transaction(engine) as session:
        upload = Upload(kind="content", blob_key="uploads/x.jpg", sha256="1" * 64, content_type="image/jpeg", size=1)
        session.add(upload)
        session.flush()
        artwork = Artwork(owner_email="a@example.com", locale="en", style="s", content_upload_id=upload.id)
        session.add(artwork)
    assert len(upload.id) == 32
    with transaction(engine) as session:
        session.execute(text("DELETE FROM uploads"))
    with transaction(engine, read_only=True) as session:
        assert session.scalar(select(Artwork.content_upload_id)) is None


def test_bare_postgresql_urls_use_psycopg_3() -> None:
    engine = make_engine("postgresql://user@127.0.0.1:1/db")
    assert engine.dialect.driver == "psycopg"
