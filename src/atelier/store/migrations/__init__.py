"""Schema migrations (Alembic), run from code: ``upgrade(engine)`` or ``atelier db upgrade``.

The scripts live in ``versions/``. To write a new one after changing the models::

    alembic -c /dev/null ... (or) python -c "from atelier.store.migrations import revision; \
        revision('sqlite:////tmp/x.db', 'what changed')"

then read and tidy what autogenerate wrote; tests/store/test_migrations.py checks that the
migrations and the models describe the same schema on SQLite and PostgreSQL.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

HERE = Path(__file__).resolve().parent


def alembic_config() -> Config:
    """An Alembic configuration pointing at these scripts (no alembic.ini needed)."""
    config = Config()
    config.set_main_option("script_location", str(HERE))
    # Revision files are named <number>_<slug>.py so they sort in the order they apply.
    config.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the database of ``engine`` to ``revision`` (the latest by default), in one transaction
    where the database allows it (PostgreSQL: DDL is transactional)."""
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Take the database of ``engine`` back to ``revision`` ("base" empties it)."""
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def head_revision() -> str | None:
    """The newest revision the scripts know."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (None: not migrated at all)."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def is_up_to_date(engine: Engine) -> bool:
    """Whether the database is at the newest revision (for a readiness check)."""
    return current_revision(engine) == head_revision()


def revision(engine: Engine, message: str, rev_id: str) -> None:
    """Autogenerate a new revision script from the difference between ``engine``'s database (at
    head) and the models. A developer tool: always read what it wrote."""
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.revision(config, message=message, autogenerate=True, rev_id=rev_id)
