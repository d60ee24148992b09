"""The commission painter: a photo and a catalog style (or paintings and a recipe) in, a finished
picture out.

    Gatys passes -> finishing (colour lift, smoothing) -> optional upscale (waifu2x) -> watermark

:func:`render_painting` is the whole pipeline, with every intermediate kept
(:class:`Rendered`): the worker stores the watermarked preview (the recipe scaled down to
ATELIER_PREVIEW_MAX_SIZE); for the paid high-resolution version it paints the recipe at its full
size without the mark and doubles it with :func:`upscale_picture` (atelier.service.payments).
:func:`render_commission` is the one-call form of the same pipeline. ``atelier render --engine gatys`` calls :func:`render_painting` too.

The watermark goes on last, after the upscale, so it is drawn crisp at the final size instead of
being enlarged with the picture (``atelier.art.blocks.finish.finish`` would put it on before).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from PIL import Image

from atelier.install import models
from atelier.art.blocks.devices import resolve_device
from atelier.art.errors import ModelMissingError
from atelier.service.errors import ServiceError
from atelier.art.blocks.finish import FinishSpec, Watermark, finish
from atelier.art.engines.gatys import Painting, PassRecord, Recipe, check_layers, paint, pick_recipe
from atelier.art.blocks.images import fit_longest, to_pil, to_tensor
from atelier.art.progress import Progress, ProgressCallback, no_progress
from atelier.install.styles import Style
from atelier.art.engines.upscale import Upscaler
from atelier.art.blocks.vgg import VGGEncoder, load_vgg

log = logging.getLogger(__name__)

#: VGG weights the Gatys engine can use, best first: the full normalised VGG-19 of AdaIN, then
#: the WCT encoders that end at relu3_1, relu2_1, relu1_1 (the first two ship in ../shared).
VGG_SOURCES: tuple[tuple[str, str], ...] = (
    ("adain", "vgg"),
    ("ust-conv3_1", "encoder"),
    ("ust-conv2_1", "encoder"),
    ("ust-conv1_1", "encoder"),
)
#: The finishing used by ``finish=True`` when the style has none (or there is no style): a light
#: levels stretch and a touch of saturation, what a print shop would do to any painting.
DEFAULT_FINISH = FinishSpec(auto_levels=True, clip_percent=0.3, saturation=1.05)
#: The watermark used by ``watermark=True`` when the style has none.
DEFAULT_WATERMARK = Watermark(text="Atelier", position="bottom-right", opacity=0.4, scale=0.22)
#: waifu2x model for ``upscale``: the photo model suits paintings made from photos.
UPSCALE_MODEL = "upconv_7_photo"
#: Longest side a painting (style image) is decoded at: more than any pass needs.
STYLE_IMAGE_SIZE = 2048


class PaintingError(ServiceError):
    """The painting options do not fit together."""


@dataclass
class Rendered:
    """Everything :func:`render_painting` made.

    ``image`` is the deliverable (finished, upscaled if asked, watermarked if asked);
    ``finished`` is the same picture at the painted size, finished and without a watermark (what
    the high-resolution version is made from); ``painted`` is the engine's raw output.
    """

    image: Image.Image
    finished: Image.Image
    painted: Image.Image
    recipe: Recipe
    vgg: str
    passes: list[PassRecord] = field(default_factory=list)
    seconds: float = 0.0
    #: The final painting's Gatys objective (content + style + tv on the last pass's layers).
    objective: float | None = None


# ----------------------------------------------------------------------------- the encoder

_encoders: dict[tuple[str, str], tuple[VGGEncoder, str]] = {}
_encoders_lock = threading.Lock()


def installed_vgg(models_dir: Path) -> tuple[str, Path]:
    """The best VGG weights installed (registry name, path), or ModelMissingError."""
    for name, key in VGG_SOURCES:
        state = models.status(name, models_dir=models_dir)
        path = state.paths[key]
        if path.is_file():
            return name, path
    raise ModelMissingError(
        f"the Gatys engine needs VGG weights and none are installed in {models_dir}; "
        "run `atelier models download adain` (the full VGG-19) or "
        "`atelier models download ust-conv3_1`"
    )


def load_encoder(models_dir: Path, *, device: torch.device | str = "cpu") -> tuple[VGGEncoder, str]:
    """The best installed VGG encoder on ``device`` and its registry name; loaded once per
    process (the worker paints many pictures with it)."""
    device = resolve_device(device)
    name, path = installed_vgg(Path(models_dir))
    key = (str(path.resolve()), str(device))
    with _encoders_lock:
        cached = _encoders.get(key)
        if cached is None:
            encoder = load_vgg(path, device=device)
            log.info("Gatys: VGG weights %s (%s), layers up to %s", name, path, encoder.last_layer)
            cached = _encoders[key] = (encoder, name)
        return cached


# ----------------------------------------------------------------------------- choices


def choose_recipe(
    available_layers: Sequence[str],
    *,
    style: Style | None = None,
    recipe: str | Recipe | None = None,
    passes: str | None = None,
    size: int | None = None,
) -> Recipe:
    """The recipe to paint with: ``recipe`` (a name or a Recipe), else the style's, else auto;
    then ``passes`` (``"350x400,960x200"``) replaces its sizes and iterations, and ``size``
    scales every pass so that the last one is at most ``size`` pixels.
    """
    if isinstance(recipe, Recipe):
        chosen = recipe
        check_layers(chosen, available_layers)
    elif recipe is not None:
        chosen = pick_recipe(available_layers, recipe)
    elif style is not None and style.recipe is not None:
        chosen = style.recipe.resolve(available_layers, name=style.name)
    else:
        chosen = pick_recipe(available_layers, "auto")
    if passes:
        chosen = chosen.with_passes(passes)
    if size is not None and chosen.size > size:
        chosen = chosen.scaled(size)
    return chosen


def finish_spec(style: Style | None, finishing: bool | FinishSpec) -> FinishSpec:
    """The finishing to apply: a spec as given, the style's for True, nothing for False."""
    if isinstance(finishing, FinishSpec):
        return finishing
    if not finishing:
        return FinishSpec()
    # The watermark is drawn separately, after any upscale.
    return replace(style.finish, watermark=None) if style is not None else DEFAULT_FINISH


def watermark_spec(style: Style | None, mark: bool | str | Path | Watermark | None) -> Watermark | None:
    """The watermark to draw: a Watermark as given; True -> the style's (or the default);
    a str or Path -> a logo when it names an image file, else that text; False/None -> none."""
    if mark is None or mark is False:
        return None
    if isinstance(mark, Watermark):
        return mark
    base = (style.finish.watermark if style is not None else None) or DEFAULT_WATERMARK
    if mark is True:
        return base
    path = Path(mark)
    if path.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp", ".gif") or path.is_file():
        if not path.is_file():
            raise FileNotFoundError(2, "No such file", str(path))
        with Image.open(path) as logo:
            logo.verify()  # refuse a non-image now rather than after an hour of painting
        return replace(base, text=None, logo=path)
    text = str(mark).strip()
    if not text:
        raise PaintingError("the watermark text is empty")
    return replace(base, text=text, logo=None)


# ----------------------------------------------------------------------------- upscaling


def hd_denoise(style: Style | None) -> int:
    """The waifu2x denoise level to upscale a painting of ``style`` with: the style's
    ``[finish] denoise`` (none by default: denoising smooths brushwork away). Anything that is
    not a catalog style (a filter's entry, None) gets the default."""
    spec = getattr(style, "finish", None)
    return (spec if isinstance(spec, FinishSpec) else DEFAULT_FINISH).denoise


def upscale_picture(
    image: Image.Image,
    *,
    factor: int = 2,
    models_dir: Path,
    model: str = UPSCALE_MODEL,
    noise: int = DEFAULT_FINISH.denoise,
    device: torch.device | str = "cpu",
    progress: ProgressCallback = no_progress,
) -> Image.Image:
    """``image`` made ``factor`` times larger with waifu2x (2, or 4 = twice 2x)."""
    if factor not in (1, 2, 4):
        raise PaintingError(f"upscale by 2 or 4, not {factor}")
    if factor == 1:
        return image.copy()
    files = models.waifu2x_files(model, noise=noise, models_dir=models_dir)
    upscaler = Upscaler.load(files, device=resolve_device(device))
    out = image.convert("RGB")
    for _ in range(factor // 2):
        out = upscaler.upscale_image(out, progress=progress)
    return out


# ----------------------------------------------------------------------------- the pipeline


def postprocess(
    image: Image.Image,
    *,
    spec: FinishSpec,
    mark: Watermark | None,
    upscale: int = 1,
    models_dir: Path,
    upscale_model: str = UPSCALE_MODEL,
    upscale_noise: int | None = None,
    device: torch.device | str = "cpu",
    progress: ProgressCallback = no_progress,
) -> tuple[Image.Image, Image.Image]:
    """Finish a picture from any engine, upscale it, watermark it.

    ``upscale_noise`` is the waifu2x denoise level (default: ``spec.denoise``).

    Returns ``(finished, deliverable)``: the finished picture at its own size without a mark
    (what a high-resolution version is made from), and the picture to hand over.
    """
    if upscale not in (1, 2, 4):
        raise PaintingError(f"upscale by 2 or 4, not {upscale}")
    steps = 2 + (upscale > 1)
    progress(Progress("finish", 1, steps))
    finished = finish(image, replace(spec, watermark=None), watermark=False)
    out = finished
    if upscale > 1:
        progress(Progress("upscale", 2, steps))
        out = upscale_picture(
            finished, factor=upscale, models_dir=models_dir, model=upscale_model,
            noise=spec.denoise if upscale_noise is None else upscale_noise, device=device,
        )
    if mark is not None:
        out = mark.apply(out)
    progress(Progress("done", steps, steps))
    return finished, out



def render_painting(
    photo: Image.Image,
    *,
    models_dir: Path,
    style: Style | None = None,
    paintings: Sequence[Image.Image] = (),
    style_weights: Sequence[float] | None = None,
    recipe: str | Recipe | None = None,
    passes: str | None = None,
    size: int | None = None,
    original_colors: bool | None = None,
    init: str | Image.Image | None = None,
    seed: int = 0,
    finishing: bool | FinishSpec = True,
    watermark: bool | str | Path | Watermark | None = False,
    upscale: int = 1,
    upscale_model: str = UPSCALE_MODEL,
    upscale_noise: int | None = None,
    device: torch.device | str = "cpu",
    preview_every: int = 0,
    progress: ProgressCallback = no_progress,
    encoder: VGGEncoder | None = None,
    keep_low: Image.Image | None = None,
) -> Rendered:
    """Paint ``photo`` with a catalog ``style`` or with ``paintings`` (PIL images), finish it,
    optionally upscale it, optionally watermark it.

    * Recipe: ``recipe`` (``auto``, ``classic``, ``shallow``, ``sketch`` or a Recipe), else the
      style's, else ``auto`` (the best the installed VGG weights allow; logged); ``passes``
      replaces sizes and iterations; ``size`` caps the last pass's longest side (the passes are
      scaled with it).
    * ``paintings`` replace the style's painting when given (``style_weights`` blend several).
    * ``original_colors``/``init`` default to the style's recipe settings (else off/content);
      ``init`` may also be an image.
    * ``finishing``: True applies the style's finishing (a light default without a style);
      a FinishSpec applies that one; False none.
    * ``watermark``: True draws the style's mark (or the default); text or a logo path draws
      that; False none. It is drawn on the final picture, after any upscale.
    * ``upscale``: 1, 2 or 4 (waifu2x ``upscale_model`` with ``upscale_noise``, by default the
      style's denoise level, :func:`hd_denoise`).
    * ``progress`` gets the engine's ``pass i/n`` updates (loss, previews every
      ``preview_every`` iterations), then ``finish``, ``upscale`` and ``done``. Raising from it
      stops the work.
    * ``encoder``: an already loaded VGG (default: :func:`load_encoder`, cached per process).
    * ``keep_low``: a smaller painting the first pass keeps and only adds detail to (see
      :func:`atelier.art.engines.gatys.paint`): the commission's HD pass on its preview.
    """
    began = time.perf_counter()
    device = resolve_device(device)
    if encoder is None:
        encoder, vgg_name = load_encoder(models_dir, device=device)
    else:
        vgg_name = "given"
    chosen = choose_recipe(encoder.available_layers, style=style, recipe=recipe, passes=passes, size=size)
    log.info("painting with %s", chosen.summary())
    if not paintings:
        if style is None:
            raise PaintingError("give a style: a catalog style or at least one painting")
        paintings = [style.load_painting()]
    if style is not None and style.recipe is not None:
        if original_colors is None:
            original_colors = style.recipe.original_colors
        if init is None:
            init = style.recipe.init
    mark = watermark_spec(style, watermark)
    spec = finish_spec(style, finishing)
    if upscale not in (1, 2, 4):  # refused before the painting, not after it
        raise PaintingError(f"upscale by 2 or 4, not {upscale}")

    # No pass needs more of the photo than its largest size (Lanczos here, once, rather than a
    # 40-megapixel float tensor resized on every pass).
    largest = max(p.size for p in chosen.passes)
    if max(photo.size) > largest:
        photo = fit_longest(photo, largest)
    content = to_tensor(photo.convert("RGB")).to(device)
    styles = [to_tensor(fit_longest(p.convert("RGB"), min(STYLE_IMAGE_SIZE, max(p.size)))).to(device) for p in paintings]
    init_arg: str | torch.Tensor = "content"
    if isinstance(init, Image.Image):
        init_arg = to_tensor(init.convert("RGB")).to(device)
    elif init is not None:
        if init not in ("content", "noise"):
            raise PaintingError(f"init must be content, noise or an image, not {init!r}")
        init_arg = init
    painting: Painting = paint(
        encoder,
        content,
        styles,
        recipe=chosen,
        style_weights=style_weights,
        init=init_arg,  # type: ignore[arg-type]
        original_colors=bool(original_colors),
        seed=seed,
        preview_every=preview_every,
        progress=progress,
        keep_low=to_tensor(keep_low.convert("RGB")).to(device) if keep_low is not None else None,
    )
    painted = to_pil(painting.image)
    finished, image = postprocess(
        painted,
        spec=spec,
        mark=mark,
        upscale=upscale,
        models_dir=models_dir,
        upscale_model=upscale_model,
        upscale_noise=hd_denoise(style) if upscale_noise is None else upscale_noise,
        device=device,
        progress=progress,
    )
    return Rendered(
        image=image,
        finished=finished,
        painted=painted,
        recipe=chosen,
        vgg=vgg_name,
        passes=painting.passes,
        seconds=time.perf_counter() - began,
        objective=painting.objective.total if painting.objective is not None else None,
    )


def render_commission(
    photo: Image.Image,
    style: Style,
    *,
    max_size: int | None = None,
    watermark: bool = True,
    upscale: int = 1,
    models_dir: Path | None = None,
    device: torch.device | str | None = None,
    seed: int = 0,
    preview_every: int = 0,
    progress: ProgressCallback = no_progress,
) -> Image.Image:
    """A commission's picture: the style's recipe (its last pass at most ``max_size`` px), its
    finishing, and its watermark (``watermark=False`` for the paid version). ``models_dir`` and
    ``device`` default to the settings. Seeded: the same photo, style and seed give the same
    picture.
    """
    if models_dir is None or device is None:
        from atelier.config import get_settings

        settings = get_settings()
        models_dir = models_dir or settings.models_path
        device = device or settings.device
    return render_painting(
        photo,
        models_dir=models_dir,
        style=style,
        size=max_size,
        seed=seed,
        finishing=True,
        watermark=watermark,
        upscale=upscale,
        device=device,
        preview_every=preview_every,
        progress=progress,
    ).image
