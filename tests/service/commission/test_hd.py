"""The HD picture: painted on from the preview's painting (the same picture, twice the size), and
painted ahead of payment while the workers are idle (kept, mailed to nobody, found by the payment)."""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select, update

from atelier.service import payments
from atelier.service.artworks import order_artwork
from atelier.service.commission.job import hd_recipe
from atelier.service.commission.stages import HD_AHEAD_JOB, HD_JOB
from atelier.service.commission.status import ArtworkStatus
from atelier.service.context import Services
from atelier.service.worker import Worker
from atelier.store.db import Artwork, Job, OutboxEmail, transaction, utcnow

from tests.service.service_fixtures import add_catalog_style, make_settings, microast_painter, small_jpeg


@pytest.fixture(scope="module")
def photo(content_dir: Path) -> bytes:
    return small_jpeg(content_dir / "dog.jpg", 256)


def _services(tmp_path: Path, models_dir: Path, style_dir: Path, *, passes: str, preview: int, **settings: object) -> Services:
    values = make_settings(tmp_path / "data", models_dir, preview_max_size=preview, **settings)
    add_catalog_style(values, style_dir, passes=passes)
    return Services.open(values, public_url="https://atelier.test")


def _order(services: Services, photo: bytes) -> str:
    return order_artwork(services, style_name="starry_night", email="ana@example.com", locale="en", content=photo).id


def _pay(services: Services, public_id: str) -> None:
    started = payments.start_checkout(services, artwork=public_id, amount_minor=500, currency="USD", locale="en", base_url="https://atelier.test")
    payments.confirm_demo_payment(services, started.reference)


def _artwork(services: Services, public_id: str) -> Artwork:
    with transaction(services.engine, read_only=True) as session:
        return session.scalars(select(Artwork).where(Artwork.public_id == public_id)).one()


def _mails(services: Services) -> list[str]:
    with transaction(services.engine, read_only=True) as session:
        return [m.dedupe_key or "" for m in session.scalars(select(OutboxEmail).order_by(OutboxEmail.id))]


def _picture(services: Services, key: str | None) -> Image.Image:
    assert key
    return Image.open(io.BytesIO(services.blobs.read(key))).convert("RGB")


def _psnr(a: Image.Image, b: Image.Image) -> float:
    x, y = (np.asarray(p, np.float64) / 255.0 for p in (a, b))
    return 10 * math.log10(1.0 / float(np.mean((x - y) ** 2)))


def test_the_hd_pass_is_the_recipes_last_at_twice_the_preview() -> None:
    from atelier.art.engines.gatys import RECIPES

    full = RECIPES["shallow"]  # 256x300, 512x150, 960x100
    following = hd_recipe(full, 384)
    assert following is not None
    assert [(p.size, p.iterations) for p in following.passes] == [(768, 50)]  # half: HD_ITERATION_SHARE
    assert following.passes[0].style_layers == full.passes[-1].style_layers
    assert [p.size for p in hd_recipe(full, 640).passes] == [1280]  # type: ignore[union-attr]
    assert hd_recipe(full, 960) is None  # the preview is the whole recipe: nothing to paint


@pytest.mark.slow
@pytest.mark.parametrize("from_preview", [True, False])
def test_the_hd_picture_is_the_preview_painting_at_twice_the_size(
    tmp_path: Path, models_dir: Path, style_dir: Path, photo: bytes, from_preview: bool
) -> None:
    """The real Gatys painter: the HD picture shrunk to the preview's size is the preview
    without its mark (>= 30 dB). Painted again from the photo (the old way), it is not."""
    from atelier.service.painting import finish_spec, postprocess

    services = _services(tmp_path, models_dir, style_dir, passes="64x8,128x8", preview=64, hd_ahead=False, hd_from_preview=from_preview)
    try:
        public_id = _order(services, photo)
        assert Worker(services, worker_id="w").run_once() == "done"
        _pay(services, public_id)
        assert Worker(services, worker_id="w").run_once() == "done"
        artwork = _artwork(services, public_id)
        assert artwork.status == ArtworkStatus.DELIVERED
        preview = _picture(services, artwork.preview_key)
        painting = _picture(services, artwork.painting_key)  # kept losslessly beside the preview
        assert painting.size == preview.size == (64, 48)
        hd = _picture(services, artwork.hd_key)
        assert hd.size == (256, 192)  # a 128 px pass on the preview's painting, then waifu2x 2x
        unmarked, _ = postprocess(painting, spec=finish_spec(services.catalog.get("starry_night").source, True), mark=None, models_dir=models_dir)  # type: ignore[union-attr]
        same = _psnr(hd.resize(preview.size, Image.Resampling.LANCZOS), unmarked)
        if from_preview:
            assert same >= 30.0, same
        else:
            assert same < 30.0, same
    finally:
        services.close()


@pytest.fixture
def quick(tmp_path: Path, models_dir: Path, style_dir: Path) -> Iterator[Services]:
    services = _services(tmp_path, models_dir, style_dir, passes="48x4,96x4", preview=96)
    services.painter = microast_painter(services, steps=1)
    yield services
    services.close()


def test_an_idle_worker_paints_the_hd_ahead_and_mails_nothing_until_payment(quick: Services, photo: bytes) -> None:
    public_id = _order(quick, photo)
    worker = Worker(quick, worker_id="w")
    assert worker.run_once() == "done"  # the preview
    artwork = _artwork(quick, public_id)
    with transaction(quick.engine, read_only=True) as session:
        ahead = session.get(Job, artwork.hd_job_id)
        assert ahead is not None and ahead.kind == HD_AHEAD_JOB and ahead.status == "queued"
        assert ahead.priority < session.get(Job, artwork.job_id).priority  # type: ignore[union-attr]
    assert worker.run_once() == "done"  # nothing else waits: the HD is painted ahead
    artwork = _artwork(quick, public_id)
    assert artwork.status == ArtworkStatus.PREVIEW_READY and artwork.hd_key == f"hd/{public_id}.jpg"
    assert quick.blobs.exists(artwork.hd_key)
    assert _mails(quick) == [f"artwork:{artwork.id}:preview"]  # no download mail before payment
    assert payments.use_download(quick, artwork.download_token) is None  # and no download

    painted: list[int] = []
    painter = quick.painter
    quick.painter = lambda *a, **k: painted.append(1) or painter(*a, **k)  # type: ignore[misc]
    _pay(quick, public_id)
    assert worker.run_once() == "done"
    assert painted == []  # paying found it painted: the job only delivered it
    artwork = _artwork(quick, public_id)
    assert artwork.status == ArtworkStatus.DELIVERED
    assert _mails(quick) == [f"artwork:{artwork.id}:preview", f"artwork:{artwork.id}:download"]
    assert payments.use_download(quick, artwork.download_token) is not None


def test_a_payment_while_the_hd_waits_in_the_speculative_lane_makes_it_the_paid_job(quick: Services, photo: bytes) -> None:
    public_id = _order(quick, photo)
    assert Worker(quick, worker_id="w").run_once() == "done"
    ahead_id = _artwork(quick, public_id).hd_job_id
    _pay(quick, public_id)
    with transaction(quick.engine, read_only=True) as session:
        jobs = session.scalars(select(Job).where(Job.kind.in_((HD_JOB, HD_AHEAD_JOB)))).all()
    # One HD job, the same row: now in the paid lane, with the paid job's attempts.
    assert [(j.id, j.kind, j.max_attempts) for j in jobs] == [(ahead_id, HD_JOB, 3)]
    assert jobs[0].priority > 100
    assert Worker(quick, worker_id="w").run_once() == "done"
    assert _artwork(quick, public_id).status == ArtworkStatus.DELIVERED
    assert len([k for k in _mails(quick) if k.endswith(":download")]) == 1


def test_no_hd_is_painted_ahead_for_an_old_preview_or_when_it_is_off(quick: Services, photo: bytes) -> None:
    public_id = _order(quick, photo)
    worker = Worker(quick, worker_id="w")
    assert worker.run_once() == "done"
    with transaction(quick.engine) as session:
        session.execute(update(Artwork).where(Artwork.public_id == public_id).values(preview_ready_at=utcnow() - timedelta(hours=25)))
    assert worker.run_once() == "done"  # the ahead job ran, and painted nothing
    assert _artwork(quick, public_id).hd_key is None
    # Off: the preview queues no ahead job at all.
    quick.settings.hd_ahead = False
    other = _order(quick, photo)
    assert worker.run_once() == "done"
    assert _artwork(quick, other).hd_job_id is None and worker.run_once() is None
    # Paid, the old preview's HD is painted as usual.
    _pay(quick, public_id)
    assert worker.run_once() == "done"
    assert _artwork(quick, public_id).status == ArtworkStatus.DELIVERED


def test_the_hd_painted_ahead_steps_aside_for_a_new_order(quick: Services, photo: bytes) -> None:
    """Release lane: a preview ordered while the ahead painting runs is claimed next; the ahead
    job goes back to the queue, its attempt not counted, and is painted when the worker is idle."""
    first = _order(quick, photo)
    worker = Worker(quick, worker_id="w")
    assert worker.run_once() == "done"
    painter = quick.painter
    # Two progress reports more than a second apart: the worker looks for waiting work at most
    # once a second.
    slow = microast_painter(quick, steps=2, delay=1.2)
    ordered: list[str] = []

    def interrupted(*args: object, **kwargs: object) -> object:
        if not ordered:  # a customer orders while the HD is being painted ahead
            ordered.append(_order(quick, photo))
        return slow(*args, **kwargs)

    quick.painter = interrupted  # type: ignore[assignment]
    outcome = worker.run_once()
    assert outcome == "preempted", outcome
    ahead = _artwork(quick, first)
    assert ahead.hd_key is None
    with transaction(quick.engine, read_only=True) as session:
        job = session.get(Job, ahead.hd_job_id)
        assert job is not None and job.status == "queued" and job.attempts == 0
    quick.painter = painter
    assert worker.run_once() == "done"  # the new order's preview first
    assert _artwork(quick, ordered[0]).status == ArtworkStatus.PREVIEW_READY
    assert worker.run_once() == "done"  # then the other's HD ahead, or the new one's
    assert worker.run_once() == "done"
    assert _artwork(quick, first).hd_key is not None and _artwork(quick, ordered[0]).hd_key is not None
