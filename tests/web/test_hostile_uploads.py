"""Hostile files through every route that takes one: each gets a clear refusal (JSON with a code
on the API, a message in the page's language on the forms) and the server keeps serving.

Animated images are accepted as their first frame, everywhere (art/blocks/images.py decides it once).
Bodies over a route's limit are answered 413 before they are read (a raw socket shows the
server does not wait for the body).
"""

from __future__ import annotations

import io
import socket
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from atelier.service.context import Services
from atelier.web.app import create_app
from tests.service.service_fixtures import free_port, make_settings
from tests.web.web_fixtures import LiveServer, form_token


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb() -> bytes:
    """A valid PNG header declaring 100000 x 100000 pixels, a few bytes of data."""
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _png_chunk(b"IEND", b"")


def gif_bomb() -> bytes:
    """A GIF with a 10 x 10 screen and a frame that says 65535 x 65535."""
    return b"GIF89a" + struct.pack("<HHBBB", 10, 10, 0, 0, 0) + b"," + struct.pack("<HHHHB", 0, 0, 65535, 65535, 0) + b"\x02\x02\x44\x01\x00;"


def webp_bomb() -> bytes:
    """An extended WebP (VP8X) whose canvas is 16384 x 16384."""
    vp8x = b"VP8X" + struct.pack("<I", 10) + b"\x00\x00\x00\x00" + (16383).to_bytes(3, "little") + (16383).to_bytes(3, "little")
    body = b"WEBP" + vp8x
    return b"RIFF" + struct.pack("<I", len(body)) + body


def header_bomb(fmt: str) -> bytes:
    """A small real JPEG, BMP or TIFF whose header is rewritten to say 60000 x 50000."""
    out = io.BytesIO()
    Image.new("RGB", (16, 16), "white").save(out, fmt)
    data = bytearray(out.getvalue())
    if fmt == "JPEG":
        at = data.find(b"\xff\xc0")
        data[at + 5 : at + 9] = struct.pack(">HH", 50000, 60000)
    elif fmt == "BMP":
        data[18:26] = struct.pack("<ii", 60000, 50000)
    else:  # TIFF, little-endian: the width and length tags of the first directory
        directory = struct.unpack("<I", data[4:8])[0]
        for k in range(struct.unpack("<H", data[directory : directory + 2])[0]):
            entry = directory + 2 + 12 * k
            tag, kind = struct.unpack("<HH", data[entry : entry + 4])
            if tag in (256, 257):
                data[entry + 8 : entry + 12] = struct.pack("<H", 60000) + b"\0\0" if kind == 3 else struct.pack("<I", 60000)
    return bytes(data)


def jpeg(size: tuple[int, int] = (64, 48)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 80, 40)).save(out, "JPEG")
    return out.getvalue()


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (40, 30), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return out.getvalue()


HOSTILE: dict[str, tuple[bytes, str, str, int]] = {
    # name: (bytes, filename, content type, status)
    "png-bomb": (png_bomb(), "a.png", "image/png", 413),
    "gif-bomb": (gif_bomb(), "a.gif", "image/gif", 413),
    "webp-bomb": (webp_bomb(), "a.webp", "image/webp", 413),
    "jpeg-bomb": (header_bomb("JPEG"), "a.jpg", "image/jpeg", 413),
    "bmp-bomb": (header_bomb("BMP"), "a.bmp", "image/bmp", 413),
    "tiff-bomb": (header_bomb("TIFF"), "a.tif", "image/tiff", 413),
    "truncated-jpeg": (jpeg()[:300], "a.jpg", "image/jpeg", 422),
    "corrupt-png": (png_bomb()[:33] + b"\x00garbage" * 10, "a.png", "image/png", 422),
    "html-named-jpg": (b"<html><script>alert(1)</script></html>", "a.jpg", "image/jpeg", 422),
    "png-magic-then-html": (b"\x89PNG\r\n\x1a\n<script>alert(1)</script>", "a.png", "image/png", 422),
    "svg": (b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>', "a.svg", "image/svg+xml", 422),
    "zero-bytes": (b"", "a.jpg", "image/jpeg", 422),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_files_are_refused_by_the_upload_api(client: TestClient, name: str) -> None:
    data, filename, content_type, status = HOSTILE[name]
    answer = client.post("/api/v1/uploads", files={"file": (filename, data, content_type)})
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["code"] and error["message"]
    assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize("name", ["png-bomb", "truncated-jpeg", "html-named-jpg", "zero-bytes"])
def test_hostile_files_are_refused_by_every_other_file_route(client: TestClient, name: str) -> None:
    data, filename, content_type, status = HOSTILE[name]
    file = (filename, data, content_type)
    answers = {
        "stylize": client.post("/api/v1/stylize", data={"style_name": "candy"}, files={"content": file}),
        "stylize-style": client.post("/api/v1/stylize", data={}, files={"content": ("ok.jpg", jpeg(), "image/jpeg"), "style": file}),
        "artworks": client.post("/api/v1/artworks", data={"style_name": "candy", "email": "a@example.com"}, files={"content": file}),
        "videos": client.post("/api/v1/videos", data={"style_name": "candy"}, files={"content": file}),
    }
    for route, answer in answers.items():
        assert 400 <= answer.status_code < 500, (route, answer.status_code, answer.text)
        assert answer.json()["error"]["message"], route
    assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize("name", ["png-bomb", "truncated-jpeg", "html-named-jpg"])
def test_a_direct_upload_of_a_hostile_file_is_refused_at_confirmation(client: TestClient, name: str) -> None:
    data, _, content_type, _ = HOSTILE[name]
    ticket = client.post("/api/v1/uploads/presign", json={"content_type": content_type if content_type != "image/svg+xml" else "image/png", "kind": "content"}).json()
    sent = client.post(ticket["url"].replace("http://testserver", ""), data=ticket["fields"], files={"file": ("f", data, content_type)})
    assert sent.status_code == 204, sent.text
    confirmed = client.post(ticket["confirm_url"])
    assert 400 <= confirmed.status_code < 500 and confirmed.json()["error"]["message"]
    # The refused file is gone: confirming again finds nothing.
    assert client.post(ticket["confirm_url"]).status_code == 404


@pytest.mark.parametrize("lang,text", [("es", "No hemos podido leer esta imagen"), ("en", "We could not read this picture")])
def test_the_forms_explain_a_hostile_file_in_the_page_language(client: TestClient, lang: str, text: str) -> None:
    token = form_token(client, f"/{lang}/")
    # Each form answers with a redirect to its page (POST-redirect-GET), which says why.
    page = client.post(f"/{lang}/instant", data={"csrf_token": token, "style": "candy"}, files={"photo": ("a.jpg", HOSTILE["html-named-jpg"][0], "image/jpeg")})
    assert [r.status_code for r in page.history] == [303] and page.status_code == 200 and text in page.text
    bomb = client.post(f"/{lang}/commission", data={"csrf_token": token, "style": "candy", "email": "a@example.com"}, files={"photo": ("a.png", png_bomb(), "image/png")})
    assert [r.status_code for r in bomb.history] == [303] and bomb.status_code == 200 and "<html" in bomb.text
    assert 'role="alert"' in bomb.text


def test_a_picture_with_the_wrong_name_and_type_is_judged_by_its_bytes(client: TestClient) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), "green").save(buffer, "PNG")
    answer = client.post("/api/v1/uploads", files={"file": ("photo.jpg", buffer.getvalue(), "application/pdf")})
    assert answer.status_code == 201 and answer.json()["content_type"] == "image/png"


def test_a_jpeg_with_a_zip_appended_is_kept_only_as_a_picture(client: TestClient) -> None:
    # A polyglot (a valid JPEG that is also a ZIP): accepted as the picture it is, and what the
    # app serves back is re-encoded pixels, never the file's own bytes.
    polyglot = jpeg() + b"PK\x03\x04" + b"\x00" * 26 + b"evil.html<script>"
    answer = client.post("/api/v1/uploads", files={"file": ("a.jpg", polyglot, "image/jpeg")})
    assert answer.status_code == 201
    image = client.get(f"/api/v1/uploads/{answer.json()['id']}/image")
    assert image.headers["content-type"] == "image/jpeg" and b"PK\x03\x04" not in image.content
    assert image.headers["x-content-type-options"] == "nosniff"


def test_an_animated_image_is_taken_as_its_first_frame(client: TestClient) -> None:
    answer = client.post("/api/v1/uploads", files={"file": ("a.gif", animated_gif(), "image/gif")})
    assert answer.status_code == 201 and (answer.json()["width"], answer.json()["height"]) == (40, 30)
    shown = Image.open(io.BytesIO(client.get(f"/api/v1/uploads/{answer.json()['id']}/image").content)).convert("RGB")
    red, _, blue = shown.getpixel((20, 15))
    assert red > 200 and blue < 60  # the first (red) frame, not the second (blue)


def test_too_many_parts_are_refused(client: TestClient) -> None:
    files = [("file", (f"{i}.jpg", b"x", "image/jpeg")) for i in range(20)]
    answer = client.post("/api/v1/uploads", files=files)
    assert answer.status_code == 400 and "files" in answer.json()["error"]["message"].lower()
    fields = {f"f{i}": "x" for i in range(100)}
    assert client.post("/api/v1/uploads", data=fields, files={"file": ("a.jpg", jpeg(), "image/jpeg")}).status_code == 400
    assert client.get("/healthz").status_code == 200


# ------------------------------------------------------------------------------------------------
# bodies over the limit, on a real server


@pytest.fixture
def live(tmp_path: Path, models_dir: Path) -> Iterator[tuple[str, int]]:
    settings = make_settings(tmp_path, models_dir, max_upload_bytes=1024 * 1024, max_video_bytes=2 * 1024 * 1024)
    services = Services.open(settings, public_url="http://127.0.0.1")
    port = free_port()
    try:
        with LiveServer(create_app(services=services, workers=0, mail=False), port):
            yield "127.0.0.1", port
    finally:
        services.close()


def _status_line(sock: socket.socket) -> tuple[int, bytes]:
    sock.settimeout(10)
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = sock.recv(65536)
        if not chunk:
            break
        answer += chunk
    return int(answer.split(b" ", 2)[1]), answer


def test_a_declared_200_mb_body_is_refused_before_it_is_sent(live: tuple[str, int]) -> None:
    host, port = live
    with socket.create_connection((host, port)) as sock:
        sock.sendall(
            b"POST /api/v1/uploads HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: 209715200\r\n\r\n" + b"--b\r\n" + b"x" * 65536
        )
        status, answer = _status_line(sock)  # answered with ~64 KiB of the 200 MB sent
    assert status == 413 and b"content-type: application/json" in answer.lower()


def test_a_chunked_body_is_cut_off_at_the_limit(live: tuple[str, int]) -> None:
    host, port = live
    sent = 0
    with socket.create_connection((host, port)) as sock:
        sock.sendall(b"POST /api/v1/stylize HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\nTransfer-Encoding: chunked\r\n\r\n")
        part = b'--b\r\nContent-Disposition: form-data; name="content"; filename="a.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
        sock.sendall(b"%x\r\n%s\r\n" % (len(part), part))
        chunk = b"x" * 65536
        status = 0
        try:
            # The limit here is 2 images (2 MiB) + 1 MiB; keep sending up to 200 MB unless answered.
            while sent < 200 * 1024 * 1024:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
                sock.setblocking(False)
                try:
                    if sock.recv(1, socket.MSG_PEEK):
                        break
                except BlockingIOError:
                    pass
                finally:
                    sock.setblocking(True)
        except (BrokenPipeError, ConnectionResetError):
            pass
        status, _ = _status_line(sock)
    assert status == 413
    # Refused near the 3 MiB limit (socket buffers let the client run ahead), not after 200 MB.
    assert sent < 64 * 1024 * 1024


def test_the_page_form_over_the_limit_gets_a_page(live: tuple[str, int]) -> None:
    host, port = live
    with socket.create_connection((host, port)) as sock:
        sock.sendall(b"POST /es/commission HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: 104857600\r\n\r\n")
        status, answer = _status_line(sock)
        body = answer
        try:
            while len(body) < 20000 and b"</html>" not in body:
                more = sock.recv(65536)
                if not more:
                    break
                body += more
        except OSError:
            pass
    assert status == 413 and b"text/html" in answer and "demasiado grande".encode() in body
