"""The database: SQLAlchemy models of what the product keeps, engines and transactions.

SQLite (the default, one file in the data dir) and PostgreSQL (``postgresql+psycopg://``) run the
same models. SQLite gets one writer at a time: every write transaction starts with ``BEGIN
IMMEDIATE``, so a writer waits for the lock up front (``busy_timeout``) instead of failing half way
when a deferred read transaction tries to upgrade to a write lock, which in WAL mode fails at once
with SQLITE_BUSY whatever the timeout.

Timestamps are timezone-aware UTC everywhere in Python. PostgreSQL keeps them as ``timestamptz``;
SQLite has no such type, so :class:`UTCDateTime` stores naive UTC text and gives back aware values.
"""

from __future__ import annotations

import logging
import secrets
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.types import TypeDecorator

from atelier.extras import need

log = logging.getLogger(__name__)


def utcnow() -> datetime:
    """Now, timezone-aware, in UTC."""
    return datetime.now(UTC)


def new_token() -> str:
    """An unguessable URL-safe token: 32 characters, 192 random bits."""
    return secrets.token_urlsafe(24)


def new_public_id() -> str:
    """A random identifier safe to show in URLs (uploads are referred to by it, not by a counter
    that would let one user enumerate another user's photos)."""
    return uuid.uuid4().hex


class UTCDateTime(TypeDecorator[datetime]):
    """``DateTime(timezone=True)`` that refuses naive values and always returns aware UTC ones."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass an aware one (UTC)")
        value = value.astimezone(UTC)
        # SQLite stores text; keep it naive so that every stored value has one format and
        # comparisons between stored values and parameters stay plain string comparisons.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# JSONB on PostgreSQL (indexable, compact), JSON text elsewhere.
JSONType = JSON().with_variant(JSONB(), "postgresql")

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSONType,
        str: String(255),
    }


class JobStatus:
    """The states of a job (see the queue contract in DESIGN.md)."""

    QUEUED = "queued"  # waiting; runnable once run_at has passed
    RUNNING = "running"  # claimed; lease_owner holds it until lease_expires_at
    DONE = "done"
    FAILED = "failed"  # failed for good on the worker's word (retrying cannot help)
    DEAD = "dead"  # failed max_attempts times (or its lease expired that often)
    CANCELLED = "cancelled"

    FINISHED = (DONE, FAILED, DEAD, CANCELLED)
    ALL = (QUEUED, RUNNING, DONE, FAILED, DEAD, CANCELLED)


class Upload(Base):
    """An image (or clip) a user sent: a content photo or their own style painting."""

    __tablename__ = "uploads"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_public_id)
    kind: Mapped[str] = mapped_column(String(20))  # content | style | video
    blob_key: Mapped[str] = mapped_column(String(512), unique=True)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    content_type: Mapped[str] = mapped_column(String(100))
    size: Mapped[int] = mapped_column(BigInteger)
    width: Mapped[int | None]
    height: Mapped[int | None]
    # Temporary uploads (instant stylization, presigned uploads nobody confirmed yet) are deleted
    # by `atelier reconcile --fix` after expires_at, or after the retention setting if unset.
    temporary: Mapped[bool] = mapped_column(Boolean, default=False)
    expires_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Artwork(Base):
    """A commission: a photo, a hand-picked style, an email; a preview, then a sale, then HD."""

    __tablename__ = "artworks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Added by the service (migration 0002): the id the API and the status page use, random so
    # that nobody can walk through other people's commissions by counting; and the artwork's
    # current job, for its progress and its place in the queue.
    public_id: Mapped[str] = mapped_column(String(32), unique=True, default=new_public_id)
    job_id: Mapped[int | None] = mapped_column(Integer)
    owner_email: Mapped[str] = mapped_column(String(320), index=True)
    locale: Mapped[str] = mapped_column(String(16))
    style: Mapped[str] = mapped_column(String(100))
    parameters: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(20), default="ordered", index=True)
    content_upload_id: Mapped[str | None] = mapped_column(
        ForeignKey("uploads.id", ondelete="SET NULL")
    )
    # The tokens are kept as they are, not hashed: the emails in the outbox carry them anyway and
    # a link must be re-sendable. Lookups go through the unique indexes; they are 192-bit random
    # values, so the service layer's constant-time comparison is a belt on top of the braces.
    preview_token: Mapped[str] = mapped_column(String(64), unique=True, default=new_token)
    download_token: Mapped[str] = mapped_column(String(64), unique=True, default=new_token)
    preview_key: Mapped[str | None] = mapped_column(String(512))
    hd_key: Mapped[str | None] = mapped_column(String(512))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    preview_ready_at: Mapped[datetime | None]
    paid_at: Mapped[datetime | None]
    delivered_at: Mapped[datetime | None]
    # Added by the sales service (migration 0003): the HD download link's lifetime and use count.
    # The count goes up in one conditional UPDATE (count < limit), so two downloads at once
    # cannot both take the last use.
    download_expires_at: Mapped[datetime | None]
    download_count: Mapped[int] = mapped_column(Integer, default=0)
    download_limit: Mapped[int | None] = mapped_column(Integer)
    # Added by the commission rework (migration 0008): the preview's painting before its
    # finishing and watermark (PNG), which the HD job paints on from instead of starting over;
    # and the artwork's HD job (painted ahead of payment or after it).
    painting_key: Mapped[str | None] = mapped_column(String(512))
    hd_job_id: Mapped[int | None] = mapped_column(Integer)


class Job(Base):
    """A row of the job queue; store/queue.py is the only code that changes its state."""

    __tablename__ = "jobs"
    __table_args__ = (
        # claim: the runnable queued jobs in order; reclaim: running jobs by lease expiry.
        Index("ix_jobs_claim", "status", "priority", "run_at", "id"),
        Index("ix_jobs_lease", "status", "lease_expires_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(64), index=True)
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(20), default=JobStatus.QUEUED)
    priority: Mapped[int] = mapped_column(Integer, default=0)  # higher runs first
    run_at: Mapped[datetime] = mapped_column(default=utcnow)
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # claims so far
    max_attempts: Mapped[int] = mapped_column(Integer, default=5)
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None]
    progress: Mapped[float] = mapped_column(Float, default=0.0)  # 0..1
    progress_detail: Mapped[dict[str, Any] | None]
    preview_key: Mapped[str | None] = mapped_column(String(512))  # latest intermediate preview
    # The blob this job writes (deterministic, so a second run overwrites). Reconcile uses it to
    # find the job that remakes a missing blob.
    output_key: Mapped[str | None] = mapped_column(String(512), index=True)
    result: Mapped[dict[str, Any] | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class Sale(Base):
    """A payment for an artwork (pay what you want), as the provider reported it."""

    __tablename__ = "sales"
    __table_args__ = (UniqueConstraint("provider", "provider_ref"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    artwork_id: Mapped[int] = mapped_column(ForeignKey("artworks.id"), index=True)
    amount_minor: Mapped[int] = mapped_column(BigInteger)  # cents, yen, ...: the minor unit
    currency: Mapped[str] = mapped_column(String(3))
    provider: Mapped[str] = mapped_column(String(20))  # stripe | demo
    provider_ref: Mapped[str] = mapped_column(String(255))  # e.g. the Checkout Session id
    status: Mapped[str] = mapped_column(String(20), default="pending")  # pending|processing (a delayed method: on its way)|paid|refunded|failed
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    paid_at: Mapped[datetime | None]


class ProcessedEvent(Base):
    """Webhook events already handled: inserting the same (provider, event id) twice fails, which
    makes a redelivered webhook a no-op when done in the same transaction as its effects."""

    __tablename__ = "processed_events"
    __table_args__ = (UniqueConstraint("provider", "event_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    provider: Mapped[str] = mapped_column(String(20))
    event_id: Mapped[str] = mapped_column(String(255))
    event_type: Mapped[str | None] = mapped_column(String(100))
    received_at: Mapped[datetime] = mapped_column(default=utcnow)


class OutboxEmail(Base):
    """An email to send, written in the same transaction as the change it announces; a
    ``mail.send`` job (atelier.service.mail) sends it and records here what became of it."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # At-least-once jobs may run twice; a dedupe key (e.g. "artwork:12:preview") keeps the
    # second run from mailing the buyer again.
    dedupe_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    to_addr: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(String(300))
    text_body: Mapped[str] = mapped_column(Text)
    html_body: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), default="pending")  # pending | sent | dead
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # sends tried (its job's attempts)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]


class Worker(Base):
    """A worker process as it last reported itself (for the admin view)."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    kinds: Mapped[list[str] | None] = mapped_column(JSONType)  # null: every kind
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    current_job_id: Mapped[int | None] = mapped_column(Integer)


class RateCounter(Base):
    """Requests counted against a rate limit in one fixed window (see service/ratelimit.py).

    In the database so that every web process counts the same requests; one row per limited key
    (``scope:kind:digest``, the digest of an address or email, never the value itself)."""

    __tablename__ = "rate_counters"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    window_start: Mapped[int] = mapped_column(BigInteger, index=True)  # Unix seconds
    hits: Mapped[int] = mapped_column(Integer)


class AdminSession(Base):
    """An operator signed in at /admin (see store/sessions.py). Kept here, not only in the
    cookie, so that signing out ends the session for every copy of the cookie."""

    __tablename__ = "admin_sessions"

    #: SHA-256 of the cookie's random value (the value itself is never stored).
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    #: Which admin token (and secret key) opened it: changing either ends the session.
    token_digest: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


# ------------------------------------------------------------------------------------------------
# engines and transactions


def is_sqlite(bind: Engine | Connection | Session) -> bool:
    """Whether this engine, connection or session talks to SQLite."""
    if isinstance(bind, Session):
        bind = bind.get_bind()
    return bind.dialect.name == "sqlite"


def insert_new(session: Session, table: Any, values: dict[str, Any], *, unique: list[str]) -> bool:
    """INSERT ``values`` into ``table`` unless a row with the same ``unique`` columns exists
    (ON CONFLICT DO NOTHING, SQLite and PostgreSQL alike); whether a row was added."""
    return added_key(session, table, values, unique=unique) is not None


def added_key(session: Session, table: Any, values: dict[str, Any], *, unique: list[str]) -> Any | None:
    """:func:`insert_new`, returning the new row's primary key (None if the row was there).

    RETURNING rather than rowcount: psycopg reports no rowcount for INSERT .. ON CONFLICT, so a
    rowcount check takes every new row for a duplicate on PostgreSQL.
    """
    from sqlalchemy.dialects.postgresql import insert as pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    insert = sqlite_insert if is_sqlite(session) else pg_insert
    statement = insert(table).values(**values).on_conflict_do_nothing(index_elements=unique).returning(*table.primary_key.columns)
    row = session.execute(statement).first()
    return None if row is None else row[0]


#: Seconds to wait for PostgreSQL to accept a connection.
CONNECT_TIMEOUT = 10


def make_engine(url: str, *, echo: bool = False, busy_timeout_ms: int = 30_000) -> Engine:
    """An engine for ``url`` with the settings this product relies on.

    SQLite: WAL (readers never block the writer), ``busy_timeout`` (wait for the lock rather than
    fail), foreign keys on, and ``BEGIN IMMEDIATE`` for every transaction but those opened with
    the ``sqlite_begin="DEFERRED"`` execution option (see :func:`transaction`). PostgreSQL: a
    pre-ping so that a restarted server does not hand out dead connections.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            from pathlib import Path

            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, echo=echo)
        _sqlite_discipline(engine, busy_timeout_ms)
        return engine
    if parsed.get_backend_name() == "postgresql":
        need("psycopg")  # the postgres extra: one line naming it, not SQLAlchemy's traceback
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        # A bare postgresql:// would pick psycopg2, which is not installed; psycopg 3 is.
        parsed = parsed.set(drivername="postgresql+psycopg")
    # connect_timeout: a server that does not answer at all (a host down, packets dropped)
    # would otherwise hold each request for the OS's TCP timeout, minutes, before it can say 503.
    # A ?connect_timeout= in the URL wins.
    connect_args = {} if "connect_timeout" in parsed.query else {"connect_timeout": CONNECT_TIMEOUT}
    return create_engine(parsed, echo=echo, pool_pre_ping=True, connect_args=connect_args)


def _sqlite_discipline(engine: Engine, busy_timeout_ms: int) -> None:
    # SQLAlchemy's documented recipe: stop the sqlite3 module from emitting its own (deferred,
    # and late: only before DML) BEGIN, and emit ours when SQLAlchemy begins a transaction.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            cursor.execute("PRAGMA foreign_keys = ON")
            mode = cursor.execute("PRAGMA journal_mode = WAL").fetchone()
            if mode and str(mode[0]).lower() not in ("wal", "memory"):
                log.warning("SQLite refused WAL mode (journal_mode=%s)", mode[0])
            # In WAL, NORMAL loses at most the last transactions on power loss, never integrity.
            cursor.execute("PRAGMA synchronous = NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        if mode not in ("IMMEDIATE", "DEFERRED", "EXCLUSIVE"):
            raise ValueError(f"sqlite_begin must be IMMEDIATE, DEFERRED or EXCLUSIVE, not {mode!r}")
        conn.exec_driver_sql(f"BEGIN {mode}")


@contextmanager
def transaction(engine: Engine, *, read_only: bool = False) -> Iterator[Session]:
    """A session inside one transaction: committed on success, rolled back on error.

    On SQLite a write transaction takes the write lock at BEGIN (one writer at a time); pass
    ``read_only=True`` for a plain deferred BEGIN, which in WAL mode never waits for writers.
    """
    bind = engine.execution_options(sqlite_begin="DEFERRED") if read_only else engine
    with Session(bind=bind, expire_on_commit=False) as session, session.begin():
        yield session
