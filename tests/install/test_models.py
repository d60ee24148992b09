"""The model registry: real weights from ../shared/models, downloads from a loopback server."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import socket
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from atelier.install import models
from atelier.art.errors import ModelError, ModelMissingError
from atelier.art.progress import Progress

# -- a file server on 127.0.0.1 ----------------------------------------------------------------


class FileServer:
    """Serves ``routes[path] = (body, behaviour)``; behaviour is ok, cut, 404 or html."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[bytes, str]] = {}
        self.hits: list[str] = []
        self.ranges: list[str | None] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                server.hits.append(self.path)
                body, behaviour = server.routes.get(self.path, (b"", "404"))
                if behaviour == "404":
                    self.send_error(404, "Not Found")
                    return
                server.ranges.append(self.headers.get("Range"))
                wanted = self.headers.get("Range") or ""
                if behaviour == "ranges" and wanted.startswith("bytes="):
                    start = int(wanted[6:].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                    self.send_header("Content-Length", str(len(body) - start))
                    self.end_headers()
                    self.wfile.write(body[start:])
                    return
                self.send_response(200)
                kind = "text/html" if behaviour == "html" else "application/octet-stream"
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if behaviour == "cut":
                    # Announce the whole file, send half, hang up.
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def url(self, path: str) -> str:
        return self.base + path


@pytest.fixture
def server() -> Iterator[FileServer]:
    fs = FileServer()
    fs.thread.start()
    yield fs
    fs.httpd.shutdown()
    fs.httpd.server_close()


def point_at(monkeypatch: pytest.MonkeyPatch, name: str, urls_by_key: dict[str, tuple[str, ...]]) -> None:
    """Replace a registry entry's URLs (the spec objects are frozen: swap the whole spec)."""
    spec = models.REGISTRY[name]
    files = tuple(
        dataclasses.replace(f, urls=urls_by_key[f.key]) if f.key in urls_by_key else f for f in spec.files
    )
    monkeypatch.setitem(models.REGISTRY, name, dataclasses.replace(spec, files=files))


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.startswith(".") or p.suffix == ".part")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- the registry itself -----------------------------------------------------------------------


def test_the_registry_has_the_names_the_engines_use() -> None:
    expected = {
        "adain", "ust-conv1_1", "ust-conv2_1", "ust-conv3_1", "microast",
        "filter-candy", "filter-mosaic", "filter-rain_princess", "filter-udnie",
        "filter-pointilism", "waifu2x-upconv_7_photo", "waifu2x-upconv_7_art", "waifu2x-cunet",
    }  # fmt: skip
    assert set(models.REGISTRY) == expected
    assert set(models.get_spec("adain").files[i].key for i in range(2)) == {"vgg", "decoder"}
    assert {f.key for f in models.get_spec("microast").files} == {
        "content_encoder", "style_encoder", "modulator", "decoder"
    }  # fmt: skip
    assert models.get_spec("ust-conv2_1").file("encoder").relpath == "vgg/vgg_normalised_conv2_1.pth"
    assert models.get_spec("adain").file("vgg").relpath == "vgg/vgg_normalised.pth"


def test_every_downloadable_file_comes_from_an_official_https_source() -> None:
    for spec in models.REGISTRY.values():
        for f in spec.files:
            assert all(url.startswith("https://") for url in f.urls), f.relpath
            if f.archive_member is None and f.urls:
                assert f.sha256 is not None and f.size is not None, f"{spec.name}:{f.key} is not pinned"
        assert spec.license and spec.homepage.startswith("https://") and spec.title


def test_pinned_github_urls_name_a_commit_not_a_branch() -> None:
    for spec in models.REGISTRY.values():
        for f in spec.files:
            for url in f.urls:
                if "raw.githubusercontent.com" in url:
                    commit = url.split("/")[5]
                    assert len(commit) == 40 and int(commit, 16) >= 0, url


def test_an_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(ModelError, match="microast") as caught:
        models.get_spec("micro-ast")
    assert "filter-candy" in str(caught.value)


def test_pointilism_is_import_only() -> None:
    assert not models.get_spec("filter-pointilism").downloadable
    assert "filter-pointilism" not in models.downloadable_names()
    assert "filter-candy" in models.downloadable_names()


# -- against the real shared models -------------------------------------------------------------


def test_every_pinned_file_in_the_shared_folder_verifies(models_dir: Path) -> None:
    reports = models.verify(models_dir=models_dir)
    by_state: dict[str, set[str]] = {}
    for report in reports:
        by_state.setdefault(report.state, set()).add(f"{report.name}:{report.key}")
    assert "corrupt" not in by_state
    # The full VGG and the AdaIN decoder are not in ../shared (MODELS.md says why).
    assert by_state["missing"] == {"adain:vgg", "adain:decoder"}
    # The filters there are conversions: recognised as known-good, not as the official bytes.
    assert by_state["known"] == {f"filter-{s}:weights" for s in ("candy", "mosaic", "rain_princess", "udnie", "pointilism")}
    assert len(by_state["ok"]) == 6 + 4 + 10 + 10 + 18


def test_status_sees_installed_and_missing_models(models_dir: Path, tmp_path: Path) -> None:
    assert models.status("microast", models_dir=models_dir).state == "installed"
    assert models.status("adain", models_dir=models_dir).state == "missing"
    (tmp_path / "microast").mkdir()
    (tmp_path / "microast" / "modulator_iter_160000.pth.tar").write_bytes(
        (models_dir / "microast" / "modulator_iter_160000.pth.tar").read_bytes()
    )
    partial = models.status("microast", models_dir=tmp_path)
    assert partial.state == "partial"
    assert [f.key for f in partial.missing] == ["content_encoder", "style_encoder", "decoder"]


def test_require_gives_the_paths_by_key(models_dir: Path) -> None:
    paths = models.require("microast", models_dir=models_dir)
    assert paths["decoder"] == models_dir / "microast" / "decoder_iter_160000.pth.tar"
    assert all(path.is_file() for path in paths.values())
    ust = models.require("ust-conv3_1", models_dir=models_dir)
    assert ust == {
        "encoder": models_dir / "vgg" / "vgg_normalised_conv3_1.pth",
        "decoder": models_dir / "vgg" / "feature_invertor_conv3_1.pth",
    }
    assert len(models.require("waifu2x-cunet", models_dir=models_dir)) == 18


def test_require_names_the_missing_files_and_the_command(models_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelMissingError) as caught:
        models.require("adain", models_dir=models_dir)
    message = str(caught.value)
    assert "vgg/vgg_normalised.pth" in message and "adain/decoder.pth" in message
    assert str(models_dir) in message
    assert "atelier models download adain" in message and "atelier models import" in message
    with pytest.raises(ModelMissingError, match="atelier models import DIR") as caught:
        models.require("filter-pointilism", models_dir=tmp_path)
    assert "download" not in str(caught.value).replace("no official download", "")


def test_require_refuses_a_file_of_the_wrong_size(models_dir: Path, tmp_path: Path) -> None:
    models.import_dir(models_dir, models_dir=tmp_path, names=["microast"])
    decoder = tmp_path / "microast" / "decoder_iter_160000.pth.tar"
    decoder.write_bytes(decoder.read_bytes()[:1000])
    with pytest.raises(ModelError, match="damaged"):
        models.require("microast", models_dir=tmp_path)


def test_import_copies_the_shared_folder_and_a_second_import_finds_it_present(
    models_dir: Path, tmp_path: Path
) -> None:
    target = tmp_path / "models"
    reports = models.import_dir(models_dir, models_dir=target)
    states = {f"{r.name}:{r.key}": r.state for r in reports}
    assert states["adain:vgg"] == "absent"
    assert states["microast:decoder"] == "imported"
    assert states["filter-pointilism:weights"] == "imported"
    assert sum(state == "imported" for state in states.values()) == 53
    assert models.status("waifu2x-cunet", models_dir=target).state == "installed"
    assert all(r.state in ("ok", "known", "missing") for r in models.verify(models_dir=target))
    assert leftovers(target) == []
    again = models.import_dir(models_dir, models_dir=target, names=["microast"])
    assert {r.state for r in again} == {"present"}


def test_import_refuses_a_file_that_fails_its_checksum(models_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "src" / "microast"
    source.mkdir(parents=True)
    good = (models_dir / "microast" / "modulator_iter_160000.pth.tar").read_bytes()
    damaged = bytearray(good)
    damaged[500] ^= 0xFF
    (source / "modulator_iter_160000.pth.tar").write_bytes(bytes(damaged))
    (source / "decoder_iter_160000.pth.tar").write_bytes(
        (models_dir / "microast" / "decoder_iter_160000.pth.tar").read_bytes()
    )
    target = tmp_path / "models"
    reports = {r.key: r for r in models.import_dir(tmp_path / "src", models_dir=target, names=["microast"])}
    assert reports["modulator"].state == "refused"
    assert "sha256" in reports["modulator"].message
    assert reports["decoder"].state == "imported"
    assert not (target / "microast" / "modulator_iter_160000.pth.tar").exists()
    assert leftovers(target) == []


def test_import_of_a_folder_without_models_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "holiday.jpg").write_bytes(b"not a model")
    with pytest.raises(ModelError, match="found no model files"):
        models.import_dir(tmp_path, models_dir=tmp_path / "models")
    with pytest.raises(ModelError, match="not a folder"):
        models.import_dir(tmp_path / "nope", models_dir=tmp_path / "models")


def test_check_known_recognises_pinned_and_alternate_files(models_dir: Path, tmp_path: Path) -> None:
    assert models.check_known(models_dir / "vgg" / "vgg_normalised_conv3_1.pth") == "ust-conv3_1:encoder"
    assert models.check_known(models_dir / "fast_neural_style" / "udnie.pth") == "filter-udnie:weights"
    stranger = tmp_path / "decoder.pth"
    stranger.write_bytes(b"\x80\x02random weights")
    assert models.check_known(stranger) is None


# -- downloads, without internet -------------------------------------------------------------


def serve_microast(server: FileServer, monkeypatch: pytest.MonkeyPatch, models_dir: Path) -> dict[str, bytes]:
    bodies = {}
    urls = {}
    for f in models.get_spec("microast").files:
        body = (models_dir / f.relpath).read_bytes()
        bodies[f.key] = body
        server.routes[f"/microast/{f.filename}"] = (body, "ok")
        urls[f.key] = (server.url(f"/microast/{f.filename}"),)
    point_at(monkeypatch, "microast", urls)
    return bodies


def test_download_streams_verifies_and_renames_into_place(
    server: FileServer, monkeypatch: pytest.MonkeyPatch, models_dir: Path, tmp_path: Path
) -> None:
    bodies = serve_microast(server, monkeypatch, models_dir)
    seen: list[Progress] = []
    decoder = tmp_path / "microast" / "decoder_iter_160000.pth.tar"

    def progress(p: Progress) -> None:
        seen.append(p)
        if p.stage == "microast/decoder_iter_160000.pth.tar":
            # While bytes arrive the real name does not exist yet; only a hidden .part does.
            assert not decoder.exists()
            assert any(n.endswith(".part") for n in leftovers(tmp_path))

    reports = models.download(["microast"], models_dir=tmp_path, progress=progress, timeout=5)
    assert [r.state for r in reports] == ["downloaded"] * 4
    for f in models.get_spec("microast").files:
        assert (tmp_path / f.relpath).read_bytes() == bodies[f.key]
    assert leftovers(tmp_path) == []
    last = [p for p in seen if p.stage == "microast/decoder_iter_160000.pth.tar"][-1]
    assert last.step == last.total == 619_135
    assert models.require("microast", models_dir=tmp_path)["decoder"] == decoder
    # Already installed and good: nothing is fetched again.
    hits = len(server.hits)
    assert {r.state for r in models.download(["microast"], models_dir=tmp_path, timeout=5)} == {"present"}
    assert len(server.hits) == hits


def test_a_checksum_mismatch_installs_nothing(
    server: FileServer, monkeypatch: pytest.MonkeyPatch, models_dir: Path, tmp_path: Path
) -> None:
    serve_microast(server, monkeypatch, models_dir)
    # The style encoder has exactly the content encoder's size: only the sha256 tells them apart.
    wrong = (models_dir / "microast" / "style_encoder_iter_160000.pth.tar").read_bytes()
    server.routes["/microast/content_encoder_iter_160000.pth.tar"] = (wrong, "ok")
    with pytest.raises(ModelError, match="does not match the pinned checksum"):
        models.download(["microast"], models_dir=tmp_path, timeout=5)
    assert not (tmp_path / "microast" / "content_encoder_iter_160000.pth.tar").exists()
    assert leftovers(tmp_path) == []


def test_an_unreachable_host_says_offline_and_names_import(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    port = closed_port()
    point_at(monkeypatch, "ust-conv1_1", {
        "encoder": (f"http://127.0.0.1:{port}/a.pth",), "decoder": (f"http://127.0.0.1:{port}/b.pth",)
    })  # fmt: skip
    with pytest.raises(ModelError) as caught:
        models.download(["ust-conv1_1"], models_dir=tmp_path, timeout=5)
    message = str(caught.value)
    assert "could not reach 127.0.0.1" in message and "are you offline?" in message
    assert "atelier models import DIR" in message
    assert leftovers(tmp_path) == [] and not (tmp_path / "vgg" / "vgg_normalised_conv1_1.pth").exists()


@pytest.mark.parametrize("pinned", [True, False])
@pytest.mark.parametrize("server_ranges", [True, False])
def test_a_download_cut_short_is_kept_hidden_and_continued_by_the_next_run(
    server: FileServer, monkeypatch: pytest.MonkeyPatch, models_dir: Path, tmp_path: Path, pinned: bool, server_ranges: bool
) -> None:
    body = (models_dir / "vgg" / "vgg_normalised_conv2_1.pth").read_bytes()
    server.routes["/enc.pth"] = (body, "cut")
    spec = models.REGISTRY["ust-conv2_1"]
    encoder = spec.file("encoder")
    encoder = dataclasses.replace(encoder, urls=(server.url("/enc.pth"),))
    if not pinned:  # the Content-Length check alone must catch it
        encoder = dataclasses.replace(encoder, size=None, sha256=None)
    monkeypatch.setitem(models.REGISTRY, "ust-conv2_1", dataclasses.replace(spec, files=(encoder,)))
    with pytest.raises(ModelError, match="cut off|interrupted") as caught:
        models.download(["ust-conv2_1"], models_dir=tmp_path, timeout=5)
    assert "run the same command again to continue it" in str(caught.value)
    assert not (tmp_path / encoder.relpath).exists()  # never under its real name while partial
    assert leftovers(tmp_path) == [f".{Path(encoder.relpath).name}.part"]
    # The network is back: the next run asks for the rest only (or, from a server that ignores
    # ranges, takes the whole file again), and the file is whole, checked and in place.
    server.routes["/enc.pth"] = (body, "ranges" if server_ranges else "ok")
    server.ranges.clear()
    models.download(["ust-conv2_1"], models_dir=tmp_path, timeout=5)
    assert server.ranges == [f"bytes={len(body) // 2}-"]
    assert (tmp_path / encoder.relpath).read_bytes() == body
    assert leftovers(tmp_path) == []


def test_a_kept_partial_that_does_not_add_up_is_thrown_away(
    server: FileServer, monkeypatch: pytest.MonkeyPatch, models_dir: Path, tmp_path: Path
) -> None:
    body = (models_dir / "vgg" / "vgg_normalised_conv2_1.pth").read_bytes()
    server.routes["/enc.pth"] = (body, "ranges")
    spec = models.REGISTRY["ust-conv2_1"]
    encoder = dataclasses.replace(spec.file("encoder"), urls=(server.url("/enc.pth"),))
    monkeypatch.setitem(models.REGISTRY, "ust-conv2_1", dataclasses.replace(spec, files=(encoder,)))
    dest = tmp_path / encoder.relpath
    dest.parent.mkdir(parents=True)
    models.partial_path(dest).write_bytes(b"x" * 1000)  # not the start of this file
    with pytest.raises(ModelError, match="does not match the pinned checksum"):
        models.download(["ust-conv2_1"], models_dir=tmp_path, timeout=5)
    assert leftovers(tmp_path) == [] and not dest.exists()
    models.download(["ust-conv2_1"], models_dir=tmp_path, timeout=5)  # and the next run starts afresh
    assert dest.read_bytes() == body


def test_a_dead_first_source_falls_back_to_the_second(
    server: FileServer, monkeypatch: pytest.MonkeyPatch, models_dir: Path, tmp_path: Path
) -> None:
    body = (models_dir / "vgg" / "vgg_normalised_conv1_1.pth").read_bytes()
    server.routes["/mirror/enc.pth"] = (body, "ok")
    server.routes["/mirror/dec.pth"] = ((models_dir / "vgg" / "feature_invertor_conv1_1.pth").read_bytes(), "ok")
    point_at(monkeypatch, "ust-conv1_1", {
        "encoder": (server.url("/gone/enc.pth"), server.url("/mirror/enc.pth")),
        "decoder": (server.url("/mirror/dec.pth"),),
    })  # fmt: skip
    models.download(["ust-conv1_1"], models_dir=tmp_path, timeout=5)
    assert (tmp_path / "vgg" / "vgg_normalised_conv1_1.pth").read_bytes() == body


def test_an_http_error_is_reported_with_its_status(
    server: FileServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    point_at(monkeypatch, "ust-conv1_1", {"encoder": (server.url("/gone.pth"),)})
    with pytest.raises(ModelError, match="answered HTTP 404"):
        models.download(["ust-conv1_1"], models_dir=tmp_path, timeout=5)


def filter_zip(models_dir: Path, styles: tuple[str, ...]) -> bytes:
    """A saved_models.zip laid out like the official one. Candy is deflated like the real
    archive (at the fastest level: 2 cores), the others stored, to keep the test quick."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("saved_models/", b"")
        for style in styles:
            data = (models_dir / "fast_neural_style" / f"{style}.pth").read_bytes()
            method = zipfile.ZIP_DEFLATED if style == "candy" else zipfile.ZIP_STORED
            zf.writestr(f"saved_models/{style}.pth", data, compress_type=method, compresslevel=1)
    return buffer.getvalue()


def point_filters_at(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    for style in ("candy", "mosaic", "rain_princess", "udnie"):
        point_at(monkeypatch, f"filter-{style}", {"weights": (url,)})


def test_filters_are_extracted_from_one_download_of_the_official_zip(
    server: FileServer, monkeypatch: pytest.MonkeyPatch, models_dir: Path, tmp_path: Path
) -> None:
    server.routes["/saved_models.zip?dl=1"] = (filter_zip(models_dir, ("candy", "mosaic", "rain_princess", "udnie")), "ok")
    point_filters_at(monkeypatch, server.url("/saved_models.zip?dl=1"))
    stages: set[str] = set()
    reports = models.download(
        ["filter-candy", "filter-mosaic", "filter-udnie"], models_dir=tmp_path,
        progress=lambda p: stages.add(p.stage), timeout=5,
    )  # fmt: skip
    assert [r.state for r in reports] == ["downloaded"] * 3
    assert server.hits == ["/saved_models.zip?dl=1"]
    assert stages == {"saved_models.zip"}
    candy = tmp_path / "fast_neural_style" / "candy.pth"
    assert hashlib.sha256(candy.read_bytes()).hexdigest() == models.get_spec("filter-candy").files[0].alternates[0]
    # The official file's hash is not pinned: verify must not call it corrupt.
    verdicts = {r.name: r.state for r in models.verify(["filter-candy", "filter-rain_princess"], models_dir=tmp_path)}
    assert verdicts == {"filter-candy": "known", "filter-rain_princess": "missing"}
    assert leftovers(tmp_path) == []
    assert not (tmp_path / ".downloads").exists()


def test_a_file_with_no_official_hash_is_unpinned_not_corrupt(tmp_path: Path) -> None:
    weights = tmp_path / "fast_neural_style" / "mosaic.pth"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"PK\x03\x04 pretend these are the official Dropbox bytes")
    [report] = models.verify(["filter-mosaic"], models_dir=tmp_path)
    assert report.state == "unpinned"


def test_an_archive_without_the_member_or_not_a_zip_is_refused(
    server: FileServer, monkeypatch: pytest.MonkeyPatch, models_dir: Path, tmp_path: Path
) -> None:
    server.routes["/only-candy.zip"] = (filter_zip(models_dir, ("candy",)), "ok")
    point_filters_at(monkeypatch, server.url("/only-candy.zip"))
    with pytest.raises(ModelError, match="no saved_models/udnie.pth"):
        models.download(["filter-udnie"], models_dir=tmp_path, timeout=5)
    server.routes["/login"] = (b"<html>Sign in to Dropbox</html>", "html")
    point_filters_at(monkeypatch, server.url("/login"))
    with pytest.raises(ModelError, match="did not send a zip archive"):
        models.download(["filter-candy"], models_dir=tmp_path, timeout=5)
    assert leftovers(tmp_path) == []
    assert not (tmp_path / "fast_neural_style" / "udnie.pth").exists()


def test_downloading_an_import_only_model_is_refused_with_the_import_command(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="atelier models import DIR"):
        models.download(["filter-pointilism"], models_dir=tmp_path)
    assert not any(tmp_path.iterdir())


def test_a_damaged_installed_file_is_replaced_by_download(
    server: FileServer, monkeypatch: pytest.MonkeyPatch, models_dir: Path, tmp_path: Path
) -> None:
    bodies = serve_microast(server, monkeypatch, models_dir)
    models.download(["microast"], models_dir=tmp_path, timeout=5)
    modulator = tmp_path / "microast" / "modulator_iter_160000.pth.tar"
    modulator.write_bytes(b"\0" * len(bodies["modulator"]))
    reports = {r.key: r.state for r in models.download(["microast"], models_dir=tmp_path, timeout=5)}
    assert reports == {"content_encoder": "present", "style_encoder": "present", "modulator": "downloaded", "decoder": "present"}
    assert modulator.read_bytes() == bodies["modulator"]
