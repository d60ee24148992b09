"""The check before delivery (issue 15): a commission painting that did not converge is painted
again from another start, and not delivered if it fails again; every painting's figures are
kept in its job's result and shown to the operator."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import select

from atelier.art.blocks.vgg import VGGEncoder, load_vgg
from atelier.art.engines.gatys import PassRecord
from atelier.install.styles import StyleRecipe, add_style
from atelier.service import admin
from atelier.service.artworks import get_artwork, order_artwork
from atelier.service.commission.check import check_painting, style_fall
from atelier.service.commission.status import ArtworkStatus
from atelier.service.context import Services
from atelier.service.worker import Worker
from atelier.store.db import Artwork, Job, JobStatus, OutboxEmail, transaction

from tests.service.service_fixtures import make_settings, small_jpeg

#: The product's own bar (Settings' defaults), not the tests' lenient one.
PRODUCT_CHECK = {"quality_max_style_distance": 0.5, "quality_min_style_fall": 0.6}
BAR = {"max_style_distance": 0.5, "min_style_fall": 0.6}


def test_the_bar_is_the_product_s_default() -> None:
    from atelier.config import Settings

    fields = Settings.model_fields
    assert {key: fields[key].default for key in PRODUCT_CHECK} == PRODUCT_CHECK


@pytest.fixture(scope="module")
def encoder(models_dir: Path) -> VGGEncoder:
    return load_vgg(models_dir / "vgg" / "vgg_normalised_conv3_1.pth")


@pytest.fixture(scope="module")
def dog(content_dir: Path) -> Image.Image:
    with Image.open(content_dir / "dog.jpg") as image:
        return image.convert("RGB").resize((128, 96))


@pytest.fixture(scope="module")
def starry(style_dir: Path) -> Image.Image:
    with Image.open(style_dir / "starry_night.jpg") as image:
        return image.convert("RGB")


def test_the_untouched_photo_fails_and_the_painting_s_own_statistics_pass(encoder: VGGEncoder, dog: Image.Image, starry: Image.Image) -> None:
    photo_itself = check_painting(dog, photo=dog, painting=starry, encoder=encoder, **BAR)
    assert not photo_itself.passed and photo_itself.style_distance == pytest.approx(1.0)
    assert "style distance 1.000 is above 0.5" in photo_itself.failures[0]
    painting_itself = check_painting(starry.resize(dog.size), photo=dog, painting=starry, encoder=encoder, **BAR)
    assert painting_itself.passed and painting_itself.style_distance < 0.1


def test_a_first_pass_that_barely_lowered_its_style_loss_is_a_stall() -> None:
    converged, stalled = PassRecord(1, 64, 64, 4), PassRecord(1, 64, 64, 4)
    converged.style_losses = [50.0, 9.0, 2.0, 0.5]
    stalled.style_losses = [53.2, 51.0, 50.4, 50.9]
    assert style_fall([converged]) == pytest.approx(0.99)
    assert style_fall([stalled]) == pytest.approx(1 - 50.4 / 53.2)
    assert style_fall([]) is None


def _services(tmp_path: Path, models_dir: Path, style_dir: Path, recipe: StyleRecipe) -> Services:
    settings = make_settings(tmp_path / "data", models_dir, preview_max_size=96, **PRODUCT_CHECK)
    add_style(style_dir / "starry_night.jpg", name="starry_night", styles_dir=settings.styles_path,
              titles={"en": "The Starry Night", "es": "La noche estrellada"}, recipe=recipe)
    return Services.open(settings, public_url="https://atelier.test")


def _order(services: Services, content_dir: Path) -> str:
    photo = small_jpeg(content_dir / "dog.jpg", 160)
    return order_artwork(services, style_name="starry_night", email="ana@example.com", locale="en", content=photo).id


def test_a_stalled_optimisation_is_painted_again_and_not_delivered(
    tmp_path: Path, models_dir: Path, style_dir: Path, content_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Steps a million times too small: the optimiser cannot move, from the photo or from noise.
    stuck = StyleRecipe(passes="48x6,96x6", all={"line_search": False, "learning_rate": 1e-6})
    services = _services(tmp_path, models_dir, style_dir, stuck)
    try:
        public_id = _order(services, content_dir)
        with caplog.at_level(logging.WARNING, logger="atelier.service.commission.job"):
            Worker(services, worker_id="w1").run_once()
        assert "did not converge" in caplog.text and "painting it again from another start" in caplog.text
        artwork = get_artwork(services, public_id)
        assert artwork is not None and artwork.status == ArtworkStatus.FAILED
        with transaction(services.engine, read_only=True) as session:
            row = session.scalars(select(Artwork)).one()
            job = session.get(Job, row.job_id)
            mails = session.scalars(select(OutboxEmail)).all()
        assert row.preview_key is None or not services.blobs.exists(row.preview_key)  # nothing to show
        assert job is not None and job.status in (JobStatus.FAILED, JobStatus.DEAD)
        assert "did not converge from two starts" in (job.last_error or "")
        assert "style distance" in (job.last_error or "")
        # The owner hears it could not be painted; no preview link goes out.
        assert [m.subject for m in mails] == ["We could not paint your artwork"]
        # The operator sees why among the failures.
        assert any("did not converge" in f["error"] for f in admin.overview(services).failures)
    finally:
        services.close()


def test_a_converged_painting_keeps_its_figures_in_the_job_result(
    tmp_path: Path, models_dir: Path, style_dir: Path, content_dir: Path
) -> None:
    services = _services(tmp_path, models_dir, style_dir, StyleRecipe(passes="48x12,96x24"))
    try:
        public_id = _order(services, content_dir)
        assert Worker(services, worker_id="w1").run_once() == "done"
        artwork = get_artwork(services, public_id)
        assert artwork is not None and artwork.status == ArtworkStatus.PREVIEW_READY
        with transaction(services.engine, read_only=True) as session:
            job = session.get(Job, session.scalars(select(Artwork.job_id)).one())
        assert job is not None and job.result is not None
        check = job.result["check"]
        assert check["passed"] is True
        assert check["style_distance"] < 0.5 and check["style_fall"] > 0.6 and check["content_distance"] > 0
        row = next(r for r in admin.overview(services).jobs if r["id"] == job.id)
        assert row["quality"].startswith(f"style {check['style_distance']:.2f}, content ")
    finally:
        services.close()
