"""Commissions: order (artwork and job together or not at all), tokens, painting, the mail,
idempotent re-runs, failures told to the owner."""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import func, select

from atelier.service.artworks import (
    ArtworkStatus,
    OrderError,
    artwork_by_preview_token,
    get_artwork,
    order_artwork,
    read_preview,
)
from atelier.service import lanes
from atelier.service.commission import stages
from atelier.service.progress import PREVIEW_SHARE
from atelier.service.context import Services
from atelier.service.worker import Worker
from atelier.store.db import Artwork, Job, OutboxEmail, Upload, transaction

from tests.service.service_fixtures import add_catalog_style, install_test_style, make_settings, microast_painter, small_jpeg


@pytest.fixture
def services(tmp_path: Path, models_dir: Path, style_dir: Path) -> Iterator[Services]:
    services = Services.open(make_settings(tmp_path, models_dir), public_url="https://atelier.test")
    install_test_style(services, style_dir)
    services.painter = microast_painter(services, steps=2)
    yield services
    services.close()


@pytest.fixture(scope="module")
def photo(content_dir: Path) -> bytes:
    return small_jpeg(content_dir / "dog.jpg", 160)


def _order(services: Services, photo: bytes, **overrides: object):  # type: ignore[no-untyped-def]
    values: dict[str, object] = {"style_name": "starry-night", "email": "ana@example.com", "locale": "es", "content": photo}
    values.update(overrides)
    return order_artwork(services, **values)  # type: ignore[arg-type]


def _count(services: Services, model: type) -> int:
    with transaction(services.engine, read_only=True) as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_an_order_records_the_artwork_and_its_job_together(services: Services, photo: bytes) -> None:
    view = _order(services, photo)
    assert view.status == ArtworkStatus.QUEUED and view.position == 1
    assert len(view.id) == 32 and view.id.isalnum()
    with transaction(services.engine, read_only=True) as session:
        artwork = session.scalars(select(Artwork)).one()
        job = session.get(Job, artwork.job_id)
        upload = session.get(Upload, artwork.content_upload_id)
    assert job is not None and job.kind == "artwork.preview" and job.payload == {"artwork_id": artwork.id}
    assert job.priority == lanes.INTERACTIVE  # a free preview goes before paid HD work
    assert job.output_key == f"previews/{view.id}.jpg"
    assert upload is not None and upload.temporary is False  # a commission's photo is kept


def test_when_the_job_cannot_be_recorded_neither_is_the_artwork(
    services: Services, photo: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> int:
        raise RuntimeError("the database went away")

    monkeypatch.setattr(stages, "enqueue", broken)  # where the preview stage queues its job
    with pytest.raises(RuntimeError):
        _order(services, photo)
    assert _count(services, Artwork) == 0 and _count(services, Job) == 0
    # The photo stored just before stays temporary: reconcile expires it, nothing keeps it.
    with transaction(services.engine, read_only=True) as session:
        assert [u.temporary for u in session.scalars(select(Upload))] == [True]


def test_a_second_order_waits_behind_the_first(services: Services, photo: bytes) -> None:
    _order(services, photo)
    second = _order(services, photo, email="bo@example.com")
    assert second.position == 2


def test_tokens_are_random_long_and_unrelated_to_ids(services: Services, photo: bytes) -> None:
    for _ in range(20):
        _order(services, photo)
    with transaction(services.engine, read_only=True) as session:
        rows = session.scalars(select(Artwork)).all()
    tokens = [t for a in rows for t in (a.preview_token, a.download_token)]
    assert len(set(tokens)) == len(tokens)
    for token in tokens:
        # URL-safe base64: 6 bits per character.
        assert len(token) * 6 >= 128 and math.log2(64) * len(token) >= 128
        assert all(str(a.id) != token and a.public_id not in token for a in rows)
    assert len({a.public_id for a in rows}) == len(rows)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"email": "not-an-address"}, "email"),
        ({"email": "a@b"}, "email"),
        ({"style_name": "candy"}, "hand-picked"),  # a filter is not a commission style
        ({"style_name": "nope"}, "hand-picked"),
        ({"content": None}, "photo"),
    ],
)
def test_orders_that_cannot_be_taken_say_why(services: Services, photo: bytes, overrides: dict, message: str) -> None:
    with pytest.raises(OrderError, match=message):
        _order(services, photo, **overrides)
    assert _count(services, Artwork) == 0


def test_the_worker_paints_stores_and_mails_the_link_once(services: Services, photo: bytes) -> None:
    view = _order(services, photo)
    worker = Worker(services, worker_id="w1")
    assert worker.run_once() == "done"
    done = get_artwork(services, view.id)
    assert done is not None and done.status == ArtworkStatus.PREVIEW_READY
    # The preview's own job is done; the commission's whole bar stands at the preview's share
    # (the HD picture fills the rest once paid for: the bar never goes back).
    assert done.job is not None and (done.job.progress, done.job.stage) == (1.0, "done")
    assert done.progress == PREVIEW_SHARE
    assert done.previews >= 1
    with transaction(services.engine, read_only=True) as session:
        artwork = session.scalars(select(Artwork)).one()
        mails = session.scalars(select(OutboxEmail)).all()
    assert artwork.preview_key == f"previews/{view.id}.jpg"
    assert services.blobs.read(artwork.preview_key)[:3] == b"\xff\xd8\xff"
    assert len(mails) == 1
    mail = mails[0]
    assert mail.to_addr == "ana@example.com" and mail.subject == "Tu obra está lista"
    link = f"https://atelier.test/es/a/{artwork.preview_token}"
    assert link in mail.text_body and "La noche estrellada" in mail.text_body
    info = artwork_by_preview_token(services, artwork.preview_token)
    assert info is not None and info.public_id == view.id and (info.width, info.height) == (96, 72)
    assert read_preview(services, info) == services.blobs.read(artwork.preview_key)
    # The job runs again (a worker died before recording "done"): no second mail.
    services.queue.enqueue("artwork.preview", {"artwork_id": artwork.id})
    assert worker.run_once() == "done"
    assert _count(services, OutboxEmail) == 1


def test_a_wrong_token_finds_nothing(services: Services, photo: bytes) -> None:
    _order(services, photo)
    with transaction(services.engine, read_only=True) as session:
        token = session.scalars(select(Artwork.preview_token)).one()
    assert artwork_by_preview_token(services, token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert artwork_by_preview_token(services, "") is None
    assert artwork_by_preview_token(services, "x" * 500) is None


def test_a_painting_that_fails_for_good_tells_the_owner(services: Services, photo: bytes) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("out of memory")

    services.painter = broken
    view = _order(services, photo, locale="en")
    worker = Worker(services, worker_id="w1")
    with transaction(services.engine) as session:  # make the first attempt the last
        session.get(Job, session.scalars(select(Artwork.job_id)).one()).max_attempts = 1  # type: ignore[union-attr]
    assert worker.run_once() == "dead"
    failed = get_artwork(services, view.id)
    assert failed is not None and failed.status == ArtworkStatus.FAILED
    with transaction(services.engine, read_only=True) as session:
        mail = session.scalars(select(OutboxEmail)).one()
    assert mail.subject == "We could not paint your artwork"
    assert "https://atelier.test/en/commission" in mail.text_body


def test_a_failure_with_attempts_left_puts_the_artwork_back_in_the_queue(services: Services, photo: bytes) -> None:
    calls: list[int] = []

    def flaky(*args: object, **kwargs: object) -> None:
        calls.append(1)
        raise RuntimeError("transient")

    services.painter = flaky
    view = _order(services, photo)
    assert Worker(services, worker_id="w1").run_once() == "retry"
    state = get_artwork(services, view.id)
    assert state is not None and state.status == ArtworkStatus.QUEUED and state.stage == "retrying"
    assert _count(services, OutboxEmail) == 0


def test_the_real_painter_paints_a_catalog_style_at_the_preview_size(
    tmp_path: Path, models_dir: Path, style_dir: Path, content_dir: Path
) -> None:
    settings = make_settings(tmp_path / "data", models_dir, preview_max_size=64)
    add_catalog_style(settings, style_dir, passes="32x3,64x3")
    services = Services.open(settings, public_url="https://atelier.test")
    try:
        view = order_artwork(
            services, style_name="starry_night", email="a@example.com", locale="en", content=small_jpeg(content_dir / "dog.jpg", 200)
        )
        assert Worker(services, worker_id="w").run_once() == "done"
        with transaction(services.engine, read_only=True) as session:
            artwork = session.scalars(select(Artwork)).one()
        picture = Image.open(io.BytesIO(services.blobs.read(artwork.preview_key or "")))
        assert picture.size == (64, 48)
        assert get_artwork(services, view.id).status == ArtworkStatus.PREVIEW_READY  # type: ignore[union-attr]
    finally:
        services.close()
