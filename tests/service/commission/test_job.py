"""The one painting job of a commission: the preview's recipe, and both stages run by it."""

from __future__ import annotations

from atelier.art.engines.gatys import RECIPES
from atelier.service.commission import job
from atelier.service.commission.job import preview_recipe
from atelier.service.commission.stages import HD, PREVIEW, STAGES
from atelier.service.worker import load_handlers


def test_the_preview_and_the_hd_picture_are_painted_by_one_job_function() -> None:
    handlers = load_handlers()
    assert handlers[PREVIEW.job_kind] is job.paint_preview and handlers[HD.job_kind] is job.paint_hd
    assert set(STAGES) == {"artwork.preview", "artwork.hd", "artwork.hd_ahead"}
    # What differs is data: the mark on the preview, the doubling on the HD picture.
    assert (PREVIEW.watermark, PREVIEW.upscale) == (True, 1) and (HD.watermark, HD.upscale) == (False, 2)
    assert PREVIEW.key(type("A", (), {"public_id": "abc"})) == "previews/abc.jpg"


def test_the_preview_recipe_scales_sizes_and_iterations_together() -> None:
    full = RECIPES["shallow"]  # 256x300, 512x150, 960x100
    preview = preview_recipe(full, 480)
    assert [(p.size, p.iterations) for p in preview.passes] == [(128, 150), (256, 75), (480, 50)]
    assert preview.passes[0].style_layers == full.passes[0].style_layers
    tiny = preview_recipe(full, 96)
    assert [p.iterations for p in tiny.passes] == [30, 15, 10]  # never below 10
    assert preview_recipe(full, 2000) is full  # already small enough: painted as it is
