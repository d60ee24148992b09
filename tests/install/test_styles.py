"""The style catalog: style folders, the shipped catalog, add/import/download.

Every painting comes from ../shared/images/style; downloads are served from a loopback HTTP
server (this machine has no internet).
"""

from __future__ import annotations

import functools
import hashlib
import threading
import tomllib
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import pytest
from PIL import Image

from atelier.art.errors import ImageError, ModelMissingError
from atelier.art.blocks.images import ImageTooLargeError
from atelier.install.styles import (
    STYLE_FILE,
    StyleError,
    StyleNotFoundError,
    StyleRecipe,
    add_style,
    download_styles,
    find_style,
    import_styles,
    load_catalog,
    load_style,
    shipped_catalog_dir,
    shipped_styles,
)
from atelier.art.blocks.vgg import VGGEncoder

SHALLOW_LAYERS = ("relu1_1", "relu1_2", "relu2_1", "relu2_2", "relu3_1")
FULL_LAYERS = VGGEncoder.random(up_to="relu5_1").available_layers


def write_style(folder: Path, text: str, painting: Path | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / STYLE_FILE).write_text(text, encoding="utf-8")
    if painting is not None:
        (folder / "painting.jpg").write_bytes(painting.read_bytes())
    return folder


# ----------------------------------------------------------------------------- add


def test_add_makes_a_style_folder_from_one_painting(style_dir: Path, tmp_path: Path) -> None:
    style = add_style(style_dir / "starry_night.jpg", name="Starry", styles_dir=tmp_path, artist="Vincent van Gogh")
    assert style.name == "starry" and style.folder == tmp_path / "starry"
    assert style.installed and style.image_path.read_bytes() == (style_dir / "starry_night.jpg").read_bytes()
    with Image.open(style.thumbnail_path) as thumb:
        assert thumb.size == (256, 256)
    assert style.titles == {"en": "Starry", "es": "Starry"} and style.artist == "Vincent van Gogh"
    assert style.engine == "gatys" and style.recipe == StyleRecipe()  # the default recipe, auto
    assert style.finish.auto_levels and style.finish.watermark is not None
    # The file is TOML an operator can edit, and reads back to the same style.
    assert tomllib.loads((style.folder / STYLE_FILE).read_text())["recipe"]["base"] == "auto"
    assert load_style(style.folder) == style


def test_add_refuses_an_existing_name_a_bad_name_and_a_tiny_painting(style_dir: Path, tmp_path: Path) -> None:
    add_style(style_dir / "udnie.jpg", name="udnie", styles_dir=tmp_path)
    with pytest.raises(StyleError, match="already exists.*--force"):
        add_style(style_dir / "udnie.jpg", name="udnie", styles_dir=tmp_path)
    add_style(style_dir / "mosaic.jpg", name="udnie", styles_dir=tmp_path, force=True)
    with pytest.raises(StyleError, match="bad style name"):
        add_style(style_dir / "udnie.jpg", name="../etc", styles_dir=tmp_path)
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (200, 120), "red").save(tiny)
    with pytest.raises(StyleError, match="at least 256 px"):
        add_style(tiny, name="tiny", styles_dir=tmp_path)
    with pytest.raises(ImageTooLargeError):
        add_style(style_dir / "udnie.jpg", name="big", styles_dir=tmp_path, max_pixels=1000)


def test_add_refuses_a_file_that_is_not_an_image(tmp_path: Path) -> None:
    fake = tmp_path / "fake.jpg"
    fake.write_text("not a picture")
    with pytest.raises(ImageError):
        add_style(fake, name="fake", styles_dir=tmp_path / "styles")
    assert not (tmp_path / "styles" / "fake").exists()


# ----------------------------------------------------------------------------- reading


def test_a_style_file_with_recipe_finishing_and_watermark(style_dir: Path, tmp_path: Path) -> None:
    folder = write_style(
        tmp_path / "bold",
        """
engine = "gatys"
[title]
en = "Bold"
es = "Audaz"
[painting]
artist = "Someone"
year = 1900
[recipe]
base = "shallow"
passes = "128x20,256x10"
original_colors = true
[recipe.all]
style_scale = 0.5
tv_weight = 0.01
[[recipe.pass]]
size = 100
iterations = 7
optimizer = "adam"
[[recipe.pass]]
size = 200
iterations = 3
[finish]
saturation = 1.2
smooth_strength = 0.05
[finish.watermark]
text = "Shop"
tiled = true
opacity = 0.2
""",
        style_dir / "la_muse.jpg",
    )
    style = load_style(folder)
    assert style.title_in("es-ES") == "Audaz" and style.title_in("fr") == "Bold" and style.year == "1900"
    assert style.finish.saturation == 1.2 and style.finish.smooth_strength == 0.05
    assert style.finish.watermark is not None and style.finish.watermark.tiled and style.finish.watermark.text == "Shop"
    assert style.recipe is not None and style.recipe.original_colors
    recipe = style.recipe.resolve(SHALLOW_LAYERS, name="bold")
    assert [(p.size, p.iterations, p.optimizer) for p in recipe.passes] == [(100, 7, "adam"), (200, 3, "lbfgs")]
    assert all(p.style_scale == 0.5 and p.tv_weight == 0.01 for p in recipe.passes)
    assert recipe.passes[0].style_layers == SHALLOW_LAYERS


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[title]\nes = 'x'\n", "needs at least en"),
        ("colour = 1\n[title]\nen = 'x'\n", "unknown setting"),
        ("[title]\nen = 'x'\n[finish]\nglow = 2\n", "unknown finish setting"),
        ("[title]\nen = 'x'\n[recipe]\npasses = '350'\n", "SIZExITERATIONS"),
        ("[title]\nen = 'x'\n[recipe.all]\nstyle_layers = ['relu9_9']\n", "unknown VGG layer"),
        ("[title]\nen = 'x'\n[painting]\nimage = '../../etc/passwd'\n", "plain file name"),
        ("[title]\nen = 'x'\n[painting]\nurls = ['file:///etc/passwd']\n", "not an http"),
        ("[title\nen = 'x'\n", "not valid TOML"),
    ],
)
def test_a_bad_style_file_is_refused_naming_the_file(tmp_path: Path, text: str, message: str) -> None:
    folder = write_style(tmp_path / "bad", text)
    with pytest.raises(StyleError, match=message) as caught:
        load_style(folder)
    assert str(folder / STYLE_FILE) in str(caught.value)


def test_a_style_recipe_deeper_than_the_weights_is_refused_with_the_download_command(tmp_path: Path) -> None:
    folder = write_style(tmp_path / "deep", "[title]\nen = 'Deep'\n[recipe]\nbase = 'classic'\n")
    recipe = load_style(folder).recipe
    assert recipe is not None
    assert recipe.resolve(FULL_LAYERS).deepest_layer == "relu5_1"
    with pytest.raises(ModelMissingError, match="atelier models download adain"):
        recipe.resolve(SHALLOW_LAYERS)


def test_the_catalog_lists_installed_styles_and_skips_broken_ones(style_dir: Path, tmp_path: Path) -> None:
    add_style(style_dir / "udnie.jpg", name="udnie", styles_dir=tmp_path)
    add_style(style_dir / "candy.jpg", name="candy", styles_dir=tmp_path)
    write_style(tmp_path / "later", "[title]\nen = 'Later'\n")  # its painting is not there yet
    write_style(tmp_path / "broken", "[title\n")
    (tmp_path / "notes").mkdir()
    assert [s.name for s in load_catalog(tmp_path)] == ["candy", "udnie"]
    assert [s.name for s in load_catalog(tmp_path, include_missing=True)] == ["candy", "later", "udnie"]
    assert find_style("Udnie", tmp_path).name == "udnie"
    with pytest.raises(StyleError, match="not valid TOML"):
        find_style("broken", tmp_path)
    with pytest.raises(StyleNotFoundError, match="candy"):
        find_style("picasso", tmp_path, shipped=False)
    with pytest.raises(StyleError, match="atelier styles download later"):
        find_style("later", tmp_path).load_painting()


# ----------------------------------------------------------------------------- the shipped catalog


def test_the_shipped_catalog_holds_public_domain_paintings_with_official_addresses() -> None:
    styles = shipped_styles()
    assert len(styles) >= 6
    assert {"starry_night", "great_wave", "the_scream", "the_kiss"} <= {s.name for s in styles}
    for style in styles:
        assert set(style.titles) == {"en", "es"}, style.name
        assert style.artist and style.year and style.license and "Public domain" in style.license
        assert style.source and style.source.startswith("https://commons.wikimedia.org/wiki/File:")
        assert style.urls and all(u.startswith("https://upload.wikimedia.org/wikipedia/commons/") for u in style.urls)
        # Wikimedia's path is md5(file name)[0]/[0:2]/file name: check the recorded addresses.
        file_name = style.source.rsplit("File:", 1)[1]
        digest = hashlib.md5(unquote(file_name).encode()).hexdigest()
        assert style.urls[-1].endswith(f"/{digest[0]}/{digest[:2]}/{file_name}"), style.name
        assert style.recipe is not None
        style.recipe.resolve(SHALLOW_LAYERS, name=style.name)
        style.recipe.resolve(FULL_LAYERS, name=style.name)
        assert style.finish.watermark is not None


def test_no_painting_is_shipped_in_the_package() -> None:
    files = [p for p in shipped_catalog_dir().rglob("*") if p.is_file()]
    assert files and all(p.name == STYLE_FILE for p in files), files


# ----------------------------------------------------------------------------- import


def test_import_copies_a_folder_of_styles_and_skips_existing_ones(style_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "theirs"
    write_style(source / "muse", "[title]\nen = 'Muse'\n", style_dir / "la_muse.jpg")
    write_style(source / "rain", "[title]\nen = 'Rain'\n", style_dir / "rain-princess.jpg")
    write_style(source / "empty", "[title]\nen = 'Empty'\n")  # no painting: refused
    catalog = tmp_path / "catalog"
    reports = {r.name: r for r in import_styles(source, styles_dir=catalog)}
    assert {n: r.state for n, r in reports.items()} == {"empty": "failed", "muse": "imported", "rain": "imported"}
    assert "painting" in reports["empty"].message
    assert [s.name for s in load_catalog(catalog)] == ["muse", "rain"]
    assert (catalog / "muse" / "thumbnail.jpg").is_file()  # made when missing
    again = {r.name: r.state for r in import_styles(source / "muse", styles_dir=catalog)}
    assert again == {"muse": "skipped"}
    with pytest.raises(StyleError, match="found no style"):
        import_styles(style_dir, styles_dir=catalog)  # paintings, but no style folder


# ----------------------------------------------------------------------------- download


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base's name
        pass


@pytest.fixture
def server(style_dir: Path, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A loopback HTTP server over a folder holding the shared paintings and a text file."""
    root = tmp_path / "www"
    root.mkdir()
    for name in ("starry_night.jpg", "udnie.jpg"):
        (root / name).write_bytes((style_dir / name).read_bytes())
    (root / "error.jpg").write_text("<html>not found</html>")
    handler = functools.partial(_Quiet, directory=str(root))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    httpd.shutdown()
    httpd.server_close()


def shipped(folder: Path, name: str, urls: list[str], sha256: str | None = None) -> None:
    pin = f'sha256 = "{sha256}"\n' if sha256 else ""
    listed = ", ".join(f'"{u}"' for u in urls)
    write_style(folder / name, f"[title]\nen = '{name}'\n[painting]\nurls = [{listed}]\n{pin}")


def test_download_fetches_checks_and_installs_paintings(server, tmp_path: Path, style_dir: Path) -> None:
    base, _ = server
    catalog = tmp_path / "shipped"
    shipped(catalog, "starry", [f"{base}/missing.jpg", f"{base}/starry_night.jpg"])
    sha = hashlib.sha256((style_dir / "udnie.jpg").read_bytes()).hexdigest()
    shipped(catalog, "udnie", [f"{base}/udnie.jpg"], sha256=sha)
    mine = tmp_path / "mine"
    reports = {r.name: r for r in download_styles(styles_dir=mine, catalog_dir=catalog)}
    assert {n: r.state for n, r in reports.items()} == {"starry": "downloaded", "udnie": "downloaded"}
    assert reports["starry"].message.endswith("/starry_night.jpg")  # the second address worked
    assert (mine / "starry" / "painting.jpg").read_bytes() == (style_dir / "starry_night.jpg").read_bytes()
    assert [s.name for s in load_catalog(mine)] == ["starry", "udnie"]
    assert (mine / "udnie" / "thumbnail.jpg").is_file()
    assert not [p for p in mine.rglob(".*")]  # no temporary file left behind
    again = {r.name: r.state for r in download_styles(["udnie"], styles_dir=mine, catalog_dir=catalog)}
    assert again == {"udnie": "present"}


def test_download_refuses_what_is_not_a_painting_and_leaves_nothing(server, tmp_path: Path) -> None:
    base, _ = server
    catalog = tmp_path / "shipped"
    shipped(catalog, "html", [f"{base}/error.jpg"])
    shipped(catalog, "gone", [f"{base}/nothing-here.jpg"])
    shipped(catalog, "wrong", [f"{base}/udnie.jpg"], sha256="0" * 64)
    mine = tmp_path / "mine"
    reports = {r.name: r for r in download_styles(styles_dir=mine, catalog_dir=catalog)}
    assert all(r.state == "failed" for r in reports.values())
    assert "usable image" in reports["html"].message
    assert "HTTP 404" in reports["gone"].message
    assert "not the pinned" in reports["wrong"].message
    assert load_catalog(mine) == []
    assert not [p for p in mine.rglob("*") if p.is_file() and p.name != STYLE_FILE]
    with pytest.raises(StyleNotFoundError, match="has no style 'nope'"):
        download_styles(["nope"], styles_dir=mine, catalog_dir=catalog)


def test_download_keeps_an_operator_s_edited_style_file(server, tmp_path: Path) -> None:
    base, _ = server
    catalog = tmp_path / "shipped"
    shipped(catalog, "starry", [f"{base}/starry_night.jpg"])
    mine = tmp_path / "mine"
    write_style(mine / "starry", f"[title]\nen = 'My starry'\n[painting]\nurls = ['{base}/starry_night.jpg']\n")
    assert [r.state for r in download_styles(styles_dir=mine, catalog_dir=catalog)] == ["downloaded"]
    assert find_style("starry", mine).title == "My starry"
