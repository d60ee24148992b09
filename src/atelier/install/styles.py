"""The hand-picked style catalog: a style is a painting plus how to paint with it.

A catalog is a folder with one folder per style::

    <styles dir>/
      starry_night/
        style.toml       names (en, es), artist, year, licence and source of the painting,
                         engine, recipe passes, finishing and watermark
        painting.jpg     the style image (the name is set in style.toml)
        thumbnail.jpg    a small square crop for the pages

The operator's catalog lives wherever they say (the CLI passes the folder; this module reads no
settings). The catalog shipped in the package (``atelier/catalog``) holds only the ``style.toml``
files of public-domain paintings, each with the official Wikimedia Commons address of its file:
``download_styles`` copies them into the operator's catalog and fetches the paintings.

style.toml, every key but ``[title] en`` optional::

    engine = "gatys"
    [title]
    en = "The Starry Night"
    es = "La noche estrellada"
    [painting]
    artist = "Vincent van Gogh"
    year = "1889"
    license = "Public domain"
    source = "https://commons.wikimedia.org/wiki/File:..."   # the page that documents it
    urls = ["https://upload.wikimedia.org/..."]             # what `styles download` fetches
    sha256 = "..."                                          # checked when given
    image = "painting.jpg"
    thumbnail = "thumbnail.jpg"
    [recipe]
    base = "auto"              # a built-in recipe of atelier.art.engines.gatys (auto: the best installed)
    passes = "350x400,960x200" # other sizes x iterations (optional)
    original_colors = false
    init = "content"
    [recipe.all]               # settings for every pass (Pass fields: style_scale, tv_weight...)
    style_scale = 0.8
    [[recipe.pass]]            # or pass by pass (optional; missing keys from the base recipe)
    size = 350
    iterations = 400
    [finish]                   # atelier.art.blocks.finish.FinishSpec fields
    auto_levels = true
    [finish.watermark]         # atelier.art.blocks.finish.Watermark fields
    text = "Atelier"
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from PIL import Image

from atelier.art.errors import ArtError, ImageError
from atelier.install.fetch import FetchError, fetch
from atelier.install.fetch import host as _host
from atelier.art.blocks.finish import FinishSpec
from atelier.art.engines.gatys import Pass, Recipe, RecipeError, check_layers, pick_recipe
from atelier.art.blocks.images import decode_image, save_image
from atelier.art.progress import ProgressCallback

log = logging.getLogger(__name__)

STYLE_FILE = "style.toml"
ENGINES: tuple[str, ...] = ("gatys", "adain", "microast")
LANGUAGES: tuple[str, ...] = ("en", "es")
THUMBNAIL_SIZE = 256
#: A style image smaller than this on its shorter side carries too little texture to paint
#: a 960 px picture with; a download that small is a placeholder or an error page.
MIN_PAINTING_SIDE = 256
#: What a painting file may weigh and measure (a Wikimedia original can be 200 MB and
#: 700 megapixels; the catalog fetches the 1280 px rendition first).
MAX_PAINTING_BYTES = 60 * 1024 * 1024
MAX_PAINTING_PIXELS = 60_000_000

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,47}$")
_USER_AGENT = "atelier-styles/1 (style catalog download; python urllib)"


class StyleError(ArtError):
    """A style folder, style file or catalog operation that cannot be accepted."""


class StyleNotFoundError(StyleError):
    """No style by that name in the catalog."""


class StyleUnreachableError(StyleError):
    """None of a painting's addresses could be reached at all (offline, DNS, refused, timeout)."""


# ----------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class StyleRecipe:
    """How a style paints: a built-in base recipe and this style's changes to it.

    Stays unresolved until the installed VGG weights are known (``base = "auto"`` picks the
    classic recipe with the full VGG-19, the shallow one otherwise); :meth:`resolve` makes the
    :class:`~atelier.art.engines.gatys.Recipe`.
    """

    base: str = "auto"
    passes: str | None = None
    all: Mapping[str, Any] = field(default_factory=dict)
    per_pass: tuple[Mapping[str, Any], ...] = ()
    original_colors: bool = False
    init: Literal["content", "noise"] = "content"

    def resolve(self, available_layers: Sequence[str], *, name: str = "") -> Recipe:
        """The concrete recipe for weights that reach ``available_layers``."""
        try:
            recipe = pick_recipe(available_layers, self.base)
            if self.passes:
                recipe = recipe.with_passes(self.passes)
            passes = list(recipe.passes)
            if self.per_pass:
                passes = [
                    Pass.from_dict(table, defaults=passes[min(i, len(passes) - 1)])
                    for i, table in enumerate(self.per_pass)
                ]
            if self.all:
                passes = [Pass.from_dict(self.all, defaults=p) for p in passes]
            label = f"{name} ({recipe.name})" if name else recipe.name
            resolved = replace(recipe, name=label, passes=tuple(passes))
        except RecipeError as exc:
            raise (StyleError(f"style {name!r}: {exc}") if name else exc) from None
        check_layers(resolved, available_layers)
        return resolved

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"base": self.base}
        if self.passes:
            data["passes"] = self.passes
        data["original_colors"] = self.original_colors
        data["init"] = self.init
        if self.all:
            data["all"] = dict(self.all)
        if self.per_pass:
            data["pass"] = [dict(p) for p in self.per_pass]
        return data


@dataclass(frozen=True)
class Style:
    """One style of the catalog, as read from its folder."""

    name: str
    folder: Path
    titles: Mapping[str, str]
    artist: str | None = None
    year: str | None = None
    license: str | None = None
    source: str | None = None
    urls: tuple[str, ...] = ()
    sha256: str | None = None
    image: str = "painting.jpg"
    thumbnail: str = "thumbnail.jpg"
    engine: str = "gatys"
    recipe: StyleRecipe | None = field(default_factory=StyleRecipe)
    finish: FinishSpec = field(default_factory=FinishSpec)

    @property
    def image_path(self) -> Path:
        return self.folder / self.image

    @property
    def thumbnail_path(self) -> Path:
        return self.folder / self.thumbnail

    @property
    def installed(self) -> bool:
        """Whether the painting is there (a shipped style is not until downloaded)."""
        return self.image_path.is_file()

    @property
    def title(self) -> str:
        return self.titles.get("en") or self.name

    def title_in(self, language: str) -> str:
        """The name in ``language`` (``es``, ``en-GB``...), English when not translated."""
        return self.titles.get(language.split("-")[0].lower()) or self.title

    def load_painting(self, *, max_pixels: int = MAX_PAINTING_PIXELS, max_bytes: int = MAX_PAINTING_BYTES) -> Image.Image:
        """The style image, decoded safely; refuses (StyleError) a style not yet downloaded."""
        if not self.installed:
            raise StyleError(
                f"style {self.name!r} has no painting yet ({self.image_path} is missing); "
                f"run `atelier styles download {self.name}`"
            )
        return decode_image(self.image_path, max_pixels=max_pixels, max_bytes=max_bytes)


def valid_name(name: str) -> bool:
    """Style names are folder names and URL parts: lowercase letters, digits, ``-`` and ``_``."""
    return bool(_NAME_RE.match(name))


def _check_name(name: str) -> str:
    if not valid_name(name):
        raise StyleError(
            f"bad style name {name!r}: use 1-48 lowercase letters, digits, '-' or '_', "
            "starting with a letter or digit (e.g. starry_night)"
        )
    return name


# ----------------------------------------------------------------------------- reading


def load_style(folder: Path) -> Style:
    """Read one style folder (its ``style.toml``); the folder name is the style's name."""
    folder = Path(folder)
    path = folder / STYLE_FILE
    if not path.is_file():
        raise StyleError(f"{folder} is not a style folder: it has no {STYLE_FILE}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise StyleError(f"{path} is not valid TOML: {exc}") from None
    try:
        return _style_from_dict(_check_name(folder.name), folder, data)
    except (ValueError, TypeError) as exc:
        raise StyleError(f"{path}: {exc}") from None


def _table(data: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, Mapping):
        raise ValueError(f"[{key}] must be a table")
    return dict(value)


def _text(table: Mapping[str, Any], key: str) -> str | None:
    value = table.get(key)
    if value is None:
        return None
    if not isinstance(value, (str, int)):
        raise ValueError(f"{key} must be text")
    return str(value)


def _style_from_dict(name: str, folder: Path, data: Mapping[str, Any]) -> Style:
    known = {"engine", "title", "painting", "recipe", "finish"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown setting(s): {', '.join(unknown)}")
    titles = {k: str(v) for k, v in _table(data, "title").items()}
    if not titles.get("en"):
        raise ValueError("[title] needs at least en = \"...\"")
    engine = str(data.get("engine", "gatys"))
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    painting = _table(data, "painting")
    bad = sorted(set(painting) - {"artist", "year", "license", "source", "urls", "sha256", "image", "thumbnail"})
    if bad:
        raise ValueError(f"unknown [painting] setting(s): {', '.join(bad)}")
    urls = painting.get("urls", [])
    if isinstance(urls, str):
        urls = [urls]
    for url in urls:
        if urlsplit(str(url)).scheme not in ("https", "http"):
            raise ValueError(f"painting url {url!r} is not an http(s) address")
    image = _text(painting, "image") or "painting.jpg"
    thumbnail = _text(painting, "thumbnail") or "thumbnail.jpg"
    for file_name in (image, thumbnail):
        if Path(file_name).name != file_name or file_name.startswith("."):
            raise ValueError(f"{file_name!r} must be a plain file name inside the style folder")
    sha = _text(painting, "sha256")
    if sha is not None and not re.fullmatch(r"[0-9a-f]{64}", sha):
        raise ValueError("sha256 must be 64 lowercase hex digits")
    recipe = _recipe_from_dict(_table(data, "recipe")) if engine == "gatys" else None
    finish = FinishSpec.from_dict(_table(data, "finish"), base_dir=folder)
    return Style(
        name=name,
        folder=folder,
        titles=titles,
        artist=_text(painting, "artist"),
        year=_text(painting, "year"),
        license=_text(painting, "license"),
        source=_text(painting, "source"),
        urls=tuple(str(u) for u in urls),
        sha256=sha,
        image=image,
        thumbnail=thumbnail,
        engine=engine,
        recipe=recipe,
        finish=finish,
    )


def _recipe_from_dict(table: Mapping[str, Any]) -> StyleRecipe:
    bad = sorted(set(table) - {"base", "passes", "all", "pass", "original_colors", "init"})
    if bad:
        raise ValueError(f"unknown [recipe] setting(s): {', '.join(bad)}")
    init = str(table.get("init", "content"))
    if init not in ("content", "noise"):
        raise ValueError(f"recipe init must be content or noise, not {init!r}")
    per_pass = table.get("pass", [])
    if not isinstance(per_pass, list) or not all(isinstance(p, Mapping) for p in per_pass):
        raise ValueError("[[recipe.pass]] must be a list of tables")
    recipe = StyleRecipe(
        base=str(table.get("base", "auto")),
        passes=_text(table, "passes"),
        all=dict(_table(table, "all")),
        per_pass=tuple(dict(p) for p in per_pass),
        original_colors=bool(table.get("original_colors", False)),
        init=init,  # type: ignore[arg-type]
    )
    # Check what can be checked without knowing the weights: syntax, layer names, values.
    try:
        from atelier.art.engines.gatys import RECIPES, parse_passes

        if recipe.base != "auto" and recipe.base not in RECIPES:
            raise RecipeError(f"unknown base recipe {recipe.base!r}; choose auto or {', '.join(RECIPES)}")
        if recipe.passes:
            parse_passes(recipe.passes)
        template = RECIPES["classic"].passes[0]
        for p in recipe.per_pass:
            Pass.from_dict(p, defaults=template)
        if recipe.all:
            Pass.from_dict(recipe.all, defaults=template)
    except RecipeError as exc:
        raise ValueError(str(exc)) from None
    return recipe


def load_catalog(styles_dir: Path, *, include_missing: bool = False) -> list[Style]:
    """Every style in a catalog folder, by name.

    Styles whose painting is not there are left out unless ``include_missing`` (the shipped
    catalog has none). A folder that does not read is logged and skipped, so one bad style
    does not hide the others; :func:`find_style` reports it in full.
    """
    styles_dir = Path(styles_dir)
    if not styles_dir.is_dir():
        return []
    styles = []
    for folder in sorted(p for p in styles_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not (folder / STYLE_FILE).is_file():
            continue
        try:
            style = load_style(folder)
        except StyleError as exc:
            log.warning("skipping style folder %s: %s", folder, exc)
            continue
        if style.installed or include_missing:
            styles.append(style)
        else:
            log.info("style %s has no painting yet (run `atelier styles download %s`)", style.name, style.name)
    return styles


def find_style(name: str, styles_dir: Path, *, shipped: bool = True) -> Style:
    """The style ``name`` from the operator's catalog, or else (``shipped``) the package's."""
    key = name.strip().lower()
    folder = Path(styles_dir) / key
    if valid_name(key) and (folder / STYLE_FILE).is_file():
        return load_style(folder)
    if shipped and valid_name(key) and (shipped_catalog_dir() / key / STYLE_FILE).is_file():
        return load_style(shipped_catalog_dir() / key)
    known = sorted({s.name for s in load_catalog(styles_dir)} | ({s.name for s in shipped_styles()} if shipped else set()))
    raise StyleNotFoundError(
        f"no style named {name!r}; known: {', '.join(known) or 'none'} (see `atelier styles list`)"
    )


def shipped_catalog_dir() -> Path:
    """The catalog that comes with the package (style.toml files only, no paintings)."""
    return Path(__file__).resolve().parent.parent / "catalog"


def shipped_styles() -> list[Style]:
    return load_catalog(shipped_catalog_dir(), include_missing=True)


# ----------------------------------------------------------------------------- writing


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _toml_lines(values: Mapping[str, Any]) -> list[str]:
    return [f"{key} = {_toml_value(v)}" for key, v in values.items() if v is not None]


def _toml_table(header: str, values: Mapping[str, Any]) -> list[str]:
    return [f"[{header}]", *_toml_lines(values)]


def style_toml(
    *,
    titles: Mapping[str, str],
    artist: str | None = None,
    year: str | None = None,
    license: str | None = None,
    source: str | None = None,
    image: str = "painting.jpg",
    thumbnail: str = "thumbnail.jpg",
    engine: str = "gatys",
    recipe: StyleRecipe | None = None,
    finish: Mapping[str, Any] | None = None,
    watermark: Mapping[str, Any] | None = None,
) -> str:
    """The text of a style.toml, with comments for the operator who tunes it afterwards."""
    recipe = recipe or StyleRecipe()
    lines = [
        "# A style of the Atelier catalog. Tune it, then check with `atelier styles show NAME`.",
        f"engine = {_toml_value(engine)}",
        "",
        *_toml_table("title", dict(titles)),
        "",
        *_toml_table(
            "painting",
            {"artist": artist, "year": year, "license": license, "source": source, "image": image, "thumbnail": thumbnail},
        ),
        "",
        "# base: a built-in recipe (auto = classic with the full VGG-19, shallow otherwise);",
        '# passes = "350x400,960x200" sets sizes x iterations; [recipe.all] sets any pass field',
        "# (style_scale, content_weight, style_weight, tv_weight, optimizer...) for every pass.",
        *_toml_table("recipe", {k: v for k, v in recipe.as_dict().items() if k not in ("all", "pass")}),
    ]
    if recipe.all:
        lines += ["", *_toml_table("recipe.all", recipe.all)]
    for table in recipe.per_pass:
        lines += ["", "[[recipe.pass]]", *_toml_lines(table)]
    lines += [
        "",
        "# Finishing (atelier.art.blocks.finish.FinishSpec): auto_levels, clip_percent, per_channel,",
        "# saturation, gamma, contrast, smooth_strength, smooth_radius.",
        *_toml_table("finish", dict(finish or {})),
    ]
    if watermark:
        lines += [
            "",
            "# On previews only; the paid high-resolution picture has none. text or logo (a file",
            "# in this folder), position, opacity, scale, tiled, angle, margin, color.",
            *_toml_table("finish.watermark", dict(watermark)),
        ]
    return "\n".join(lines) + "\n"


#: What ``styles add`` writes when not told otherwise: a gentle lift, and a mark on previews.
DEFAULT_FINISH: dict[str, Any] = {"auto_levels": True, "clip_percent": 0.3, "saturation": 1.05}
DEFAULT_WATERMARK: dict[str, Any] = {"text": "Atelier", "position": "bottom-right", "opacity": 0.4, "scale": 0.22}


def make_thumbnail(image: Image.Image, size: int = THUMBNAIL_SIZE) -> Image.Image:
    """A square crop of the middle of the painting, ``size`` pixels wide."""
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    square = image.convert("RGB").crop((left, top, left + side, top + side))
    return square.resize((size, size), Image.Resampling.LANCZOS)


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def add_style(
    image_path: Path,
    *,
    name: str,
    styles_dir: Path,
    titles: Mapping[str, str] | None = None,
    artist: str | None = None,
    year: str | None = None,
    license: str | None = None,
    source: str | None = None,
    recipe: StyleRecipe | None = None,
    watermark: Mapping[str, Any] | None = DEFAULT_WATERMARK,
    force: bool = False,
    max_pixels: int = MAX_PAINTING_PIXELS,
    max_bytes: int = MAX_PAINTING_BYTES,
) -> Style:
    """Make a style folder from one painting: the image, a thumbnail and a style.toml with the
    default recipe (``auto``) for the operator to tune. Refuses an existing name unless
    ``force``.
    """
    name = _check_name(name.strip().lower())
    image_path = Path(image_path)
    painting = decode_image(image_path, max_pixels=max_pixels, max_bytes=max_bytes)
    _check_painting_size(painting, str(image_path))
    folder = Path(styles_dir) / name
    if (folder / STYLE_FILE).exists() and not force:
        raise StyleError(f"style {name!r} already exists in {styles_dir}; use --force to replace it")
    suffix = image_path.suffix.lower() if image_path.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp") else ".png"
    image_name = f"painting{'.jpg' if suffix == '.jpeg' else suffix}"
    folder.mkdir(parents=True, exist_ok=True)
    if suffix == image_path.suffix.lower():
        # The operator's file as it is (no second JPEG generation); it decoded above.
        _copy_file(image_path, folder / image_name)
    else:
        save_image(painting, folder / image_name)
    save_image(make_thumbnail(painting), folder / "thumbnail.jpg", quality=85)
    pretty = name.replace("_", " ").replace("-", " ").title()
    text = style_toml(
        titles=dict(titles or {"en": pretty, "es": pretty}),
        artist=artist,
        year=year,
        license=license,
        source=source,
        image=image_name,
        recipe=recipe,
        finish=DEFAULT_FINISH,
        watermark=watermark,
    )
    _write_text(folder / STYLE_FILE, text)
    log.info("added style %s in %s", name, folder)
    return load_style(folder)


def _copy_file(source: Path, dest: Path) -> None:
    fd, temp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    os.close(fd)
    try:
        shutil.copyfile(source, temp)
        os.chmod(temp, 0o644)
        os.replace(temp, dest)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _check_painting_size(painting: Image.Image, what: str) -> None:
    if min(painting.size) < MIN_PAINTING_SIDE:
        raise StyleError(
            f"{what} is {painting.width}x{painting.height}: a style painting needs at least "
            f"{MIN_PAINTING_SIDE} px on its shorter side"
        )


@dataclass(frozen=True)
class Report:
    """What happened to one style in :func:`import_styles` or :func:`download_styles`."""

    name: str
    state: Literal["imported", "downloaded", "present", "skipped", "failed", "offline"]
    message: str = ""


def import_styles(source: Path, *, styles_dir: Path, force: bool = False) -> list[Report]:
    """Copy style folders into the catalog: ``source`` is one style folder or a folder of them.

    Each is read and its painting decoded before anything is copied; a style that exists is
    ``skipped`` unless ``force``. A folder with no style at all is refused.
    """
    source = Path(source)
    if not source.is_dir():
        raise StyleError(f"{source} is not a folder")
    folders = [source] if (source / STYLE_FILE).is_file() else sorted(
        p for p in source.iterdir() if p.is_dir() and (p / STYLE_FILE).is_file()
    )
    if not folders:
        raise StyleError(f"found no style in {source}: a style is a folder with a {STYLE_FILE}")
    reports = []
    for folder in folders:
        try:
            style = load_style(folder)
            if not style.installed:
                raise StyleError(f"its painting {style.image} is missing")
            painting = style.load_painting()
            _check_painting_size(painting, style.image)
        except (StyleError, ImageError) as exc:
            reports.append(Report(folder.name, "failed", str(exc)))
            continue
        dest = Path(styles_dir) / style.name
        if dest.exists() and not force:
            reports.append(Report(style.name, "skipped", f"already in {styles_dir} (use --force)"))
            continue
        if dest.resolve() == folder.resolve():
            reports.append(Report(style.name, "present"))
            continue
        Path(styles_dir).mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=styles_dir, prefix=f".{style.name}."))
        try:
            shutil.copytree(folder, staging, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".*"))
            if not (staging / style.thumbnail).is_file():
                save_image(make_thumbnail(painting), staging / style.thumbnail, quality=85)
            if dest.exists():
                shutil.rmtree(dest)
            os.replace(staging, dest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        reports.append(Report(style.name, "imported"))
    return reports


# ----------------------------------------------------------------------------- downloading


def download_styles(
    names: Sequence[str] | None = None,
    *,
    styles_dir: Path,
    catalog_dir: Path | None = None,
    force: bool = False,
    timeout: float = 60.0,
    progress: ProgressCallback | None = None,
    stop_when_offline: bool = False,
) -> list[Report]:
    """Install styles of the shipped catalog (all, or ``names``) into ``styles_dir``.

    For each style: its style.toml is copied (an operator's edited copy is kept unless
    ``force``), its painting fetched from the addresses in the file, in order, to a temporary
    file, checked (the pinned sha256 when there is one; otherwise that it is an image of at
    least 256 px a side, within the size limits), and only then renamed into place; then the
    thumbnail is made. A style whose painting is already there is ``present``. Failures are
    reported per style, not raised, so one unreachable file does not stop the rest -- unless
    ``stop_when_offline``: once a painting's every address was unreachable, the styles still to
    fetch are reported ``offline`` without trying (each would wait out its own timeouts).
    """
    catalog_dir = Path(catalog_dir) if catalog_dir is not None else shipped_catalog_dir()
    available = {s.name: s for s in load_catalog(catalog_dir, include_missing=True)}
    if names:
        unknown = [n for n in names if n not in available]
        if unknown:
            raise StyleNotFoundError(
                f"the shipped catalog has no style {', '.join(map(repr, unknown))}; "
                f"it has {', '.join(sorted(available))}"
            )
        chosen = [available[n] for n in names]
    else:
        chosen = list(available.values())
    reports = []
    offline = ""
    for shipped in chosen:
        dest = Path(styles_dir) / shipped.name
        toml_dest = dest / STYLE_FILE
        if force or not toml_dest.is_file():
            dest.mkdir(parents=True, exist_ok=True)
            _write_text(toml_dest, (shipped.folder / STYLE_FILE).read_text(encoding="utf-8"))
        try:
            style = load_style(dest)
        except StyleError as exc:
            reports.append(Report(shipped.name, "failed", str(exc)))
            continue
        if style.installed and not force:
            reports.append(Report(style.name, "present"))
            continue
        urls = style.urls or shipped.urls
        if not urls:
            reports.append(Report(style.name, "failed", "its style.toml gives no [painting] urls"))
            continue
        if offline:
            reports.append(Report(style.name, "offline", offline))
            continue
        try:
            used = _fetch_painting(style, urls, timeout=timeout, progress=progress)
        except StyleUnreachableError as exc:
            reports.append(Report(style.name, "offline", str(exc)))
            offline = str(exc) if stop_when_offline else ""
            continue
        except StyleError as exc:
            reports.append(Report(style.name, "failed", str(exc)))
            continue
        reports.append(Report(style.name, "downloaded", used))
    return reports


def _fetch_painting(style: Style, urls: Iterable[str], *, timeout: float, progress: ProgressCallback | None) -> str:
    failures: list[StyleError] = []
    for url in urls:
        fd, name = tempfile.mkstemp(dir=style.folder, prefix=f".{style.image}.", suffix=".part")
        os.close(fd)
        temp = Path(name)
        try:
            sha = _stream(url, temp, stage=style.name, timeout=timeout, progress=progress)
            if style.sha256 is not None and sha != style.sha256:
                raise StyleError(f"{_host(url)} sent a file whose sha256 is {sha}, not the pinned {style.sha256}")
            try:
                painting = decode_image(temp, max_pixels=MAX_PAINTING_PIXELS, max_bytes=MAX_PAINTING_BYTES)
            except ImageError as exc:
                raise StyleError(f"{_host(url)} did not send a usable image ({exc})") from None
            _check_painting_size(painting, f"the file from {_host(url)}")
            os.chmod(temp, 0o644)
            os.replace(temp, style.image_path)
            save_image(make_thumbnail(painting), style.thumbnail_path, quality=85)
            log.info("downloaded %s from %s", style.image_path, url)
            return url
        except StyleError as exc:
            log.info("style %s: %s failed: %s", style.name, url, exc)
            failures.append(exc)
        finally:
            with suppress(FileNotFoundError):
                temp.unlink()
    if failures and all(isinstance(f, StyleUnreachableError) for f in failures):
        raise StyleUnreachableError(str(failures[0]))
    raise StyleError("; ".join(map(str, failures)))


def _stream(url: str, dest: Path, *, stage: str, timeout: float, progress: ProgressCallback | None) -> str:
    """Fetch ``url`` into ``dest`` (bounded by MAX_PAINTING_BYTES); return the sha256."""
    try:
        _, sha = fetch(
            url, dest, limit=MAX_PAINTING_BYTES, stage=stage, user_agent=_USER_AGENT, timeout=timeout, progress=progress
        )
    except FetchError as exc:
        if exc.unreachable:
            raise StyleUnreachableError(f"{exc}: are you offline?") from None
        raise StyleError(str(exc)) from None
    return sha
