"""Screenshots of every page, from a real server, at a phone's width (390x844) and a laptop's
(1280x800): the instant journey (empty, painted, every style on the photo, an error), the
commission journey (the form, a bounced form, the status page while it paints and when it is
done, the preview before and after paying, the demo checkout, the receipt while the HD version
paints and once delivered), a video, the operator's view (/admin), the API reference, the
404 page, and the commission page of a server started offline (no catalog painting yet).

    scripts/screenshots                 # all of them, into docs/images/pages/
    scripts/screenshots --only instant  # the pages whose name starts with "instant"

It starts `atelier serve` (SQLite, a local folder, mail to the outbox folder: the laptop setup)
on a scratch data dir with the real weights (ATELIER_MODELS_DIR, default ../shared/models) and two
catalog styles made from ../shared/images/style with a short recipe (the pages are the subject,
not the painting), and drives Debian's Chromium with Playwright. JPEGs, small enough to commit.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import io
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ATELIER_SHARED_DIR", REPO.parent / "shared"))
WIDTHS = {"phone": {"width": 390, "height": 844}, "wide": {"width": 1280, "height": 800}}
CHROMIUM = "/usr/bin/chromium"
#: Spanish pictures of these pages only (every page is pictured in English; these show the
#: Spanish text where there is the most of it).
SPANISH = ("instant-2", "instant-4", "commission-2", "commission-5", "commission-8", "commission-9", "offline")
#: Short recipes: the commission pages, not the painting, are what these pictures show.
RECIPE = "96x30,192x30"
#: The operator's password on the scratch server.
ADMIN_TOKEN = "screenshots-only-admin-token"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _photo(path: Path, longest: int, target: Path) -> Path:
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
        image.thumbnail((longest, longest))
        image.save(target, "JPEG", quality=90)
    return target


def _clip(photo: Path, target: Path, *, frames: int = 24, width: int = 640, height: int = 360, fps: int = 12) -> Path:
    """A short H.264 clip panning across ``photo`` (a 640x360 clip: the page says it is painted
    smaller)."""
    import av
    import numpy as np
    from PIL import Image

    with Image.open(photo) as image:
        source = np.asarray(image.convert("RGB").resize((width + 4 * frames, height + 2 * frames)))
    container = av.open(str(target), "w")
    stream = container.add_stream("libx264", rate=fps)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    for i in range(frames):
        frame = np.ascontiguousarray(source[2 * i : 2 * i + height, 4 * i : 4 * i + width])
        for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return target


@contextmanager
def server(data: Path, *, with_styles: bool = True) -> Iterator[str]:
    """`atelier serve` on a free port with one worker inside, until the block ends; without
    styles, the catalog is as an offline first start leaves it (no painting downloaded)."""
    from atelier.install.styles import StyleRecipe, add_style

    styles = data / "styles"
    styles.mkdir(parents=True, exist_ok=True)
    for name, file, titles, artist in (
        ("starry_night", "starry_night.jpg", {"en": "The Starry Night", "es": "La noche estrellada"}, "Vincent van Gogh"),
        ("la_muse", "la_muse.jpg", {"en": "La Muse", "es": "La musa"}, "Pablo Picasso"),
    ) if with_styles else ():
        add_style(SHARED / "images/style" / file, name=name, styles_dir=styles, titles=titles, artist=artist,
                  recipe=StyleRecipe(base="auto", passes=RECIPE))
    port = _free_port()
    env = dict(os.environ, ATELIER_DATA_DIR=str(data), ATELIER_STYLES_DIR=str(styles),
               ATELIER_MODELS_DIR=os.environ.get("ATELIER_MODELS_DIR", str(SHARED / "models")),
               ATELIER_PREVIEW_MAX_SIZE="256", ATELIER_PUBLIC_URL=f"http://127.0.0.1:{port}",
               ATELIER_ADMIN_TOKEN=ADMIN_TOKEN)
    log = open(data / "server.log", "wb")
    process = subprocess.Popen([str(REPO / ".venv/bin/atelier"), "serve", "--port", str(port), "--workers", "1"],
                               env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(url + "/readyz", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the server did not start; see {data / 'server.log'}")
            time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


class Shots:
    """Takes and writes the pictures: JPEG, 1x, what the viewport shows or the whole page."""

    def __init__(self, out: Path, only: str | None) -> None:
        self.out = out
        self.only = only
        self.taken: list[Path] = []

    def wanted(self, name: str) -> bool:
        return not self.only or name.startswith(self.only)

    def take(self, page: Any, name: str, *, full: bool = True) -> None:
        from PIL import Image

        if name.endswith("-es") and not name.startswith(SPANISH) or not self.wanted(name):
            return
        page.wait_for_timeout(400)  # transitions and smooth scrolls settle
        png = page.screenshot(full_page=full)
        target = self.out / f"{name}.jpg"
        with Image.open(io.BytesIO(png)) as image:
            image.convert("RGB").save(target, "JPEG", quality=72, optimize=True, progressive=True)
        self.taken.append(target)
        print(f"  {_shown(target)} ({target.stat().st_size // 1024} KB)", flush=True)


def mail_link(outbox: Path, to: str, pattern: str, timeout: float = 300) -> str:
    """The first link matching ``pattern`` in a mail to ``to`` in the outbox folder."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in sorted(outbox.glob("*.eml")):
            message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            if message["To"] == to:
                found = re.search(pattern, message.get_body(("plain",)).get_content())
                if found:
                    return found.group(0)
        time.sleep(0.5)
    raise SystemExit(f"no mail to {to} with {pattern} within {timeout:.0f} s")


def instant(shots: Shots, browser: Any, base: str, files: dict[str, Path], lang: str, width: str) -> None:
    from playwright.sync_api import expect

    context = browser.new_context(viewport=WIDTHS[width], locale={"en": "en-GB", "es": "es-ES"}[lang])
    page = context.new_page()
    page.goto(f"{base}/{lang}/")
    page.wait_for_load_state("networkidle")
    if shots.wanted("instant-1"):
        shots.take(page, f"instant-1-start-{width}-{lang}")
    page.set_input_files("#photo", str(files["photo"]))
    expect(page.locator("[data-result-actions]")).to_be_visible(timeout=120_000)
    page.wait_for_load_state("networkidle")
    if shots.wanted("instant-2"):
        shots.take(page, f"instant-2-painted-{width}-{lang}", full=False)
    page.locator("#style-starry_night").check(force=True)
    expect(page.locator("#download")).to_have_attribute("download", "atelier-starry_night.jpg", timeout=120_000)
    page.fill("#compare", "45")
    page.dispatch_event("#compare", "input")
    if shots.wanted("instant-3"):
        shots.take(page, f"instant-3-compare-{width}-{lang}", full=False)
    if shots.wanted("instant-4"):
        page.click("[data-sheet-button]")
        expect(page.locator("[data-sheet]")).to_be_visible(timeout=180_000)
        page.wait_for_load_state("networkidle")
        shots.take(page, f"instant-4-every-style-{width}-{lang}", full=False)
    if shots.wanted("instant-5"):
        page.set_input_files("#photo", files={"name": "broken.jpg", "mimeType": "image/jpeg", "buffer": b"not a picture"})
        expect(page.locator("#status.is-error")).to_be_visible(timeout=60_000)
        shots.take(page, f"instant-5-bad-file-{width}-{lang}", full=False)
    context.close()


def commission(shots: Shots, browser: Any, base: str, data: Path, files: dict[str, Path], lang: str, width: str) -> None:
    """One commission from the form to the delivered receipt, pictured at every step."""
    from playwright.sync_api import expect

    context = browser.new_context(viewport=WIDTHS[width], locale={"en": "en-GB", "es": "es-ES"}[lang])
    page = context.new_page()
    page.goto(f"{base}/{lang}/commission")
    page.wait_for_load_state("networkidle")
    shots.take(page, f"commission-1-form-{width}-{lang}")
    page.set_input_files("#photo", str(files["portrait"]))
    page.evaluate("document.getElementById('email').type = 'text'")
    page.fill("#email", "ana@")
    page.click("button[type=submit]")
    expect(page.locator(".notice-error")).to_be_visible()
    page.wait_for_load_state("networkidle")
    shots.take(page, f"commission-2-bounced-{width}-{lang}")
    address = f"{lang}-{width}@example.com"
    page.fill("#email", address)
    page.click("button[type=submit]")
    expect(page).to_have_url(re.compile(r"/artworks/"))
    expect(page.locator("[data-canvas-image]")).to_be_visible(timeout=600_000)
    shots.take(page, f"commission-3-painting-{width}-{lang}")
    expect(page.locator("[data-next-preview]")).to_be_visible(timeout=900_000)
    page.wait_for_load_state("networkidle")
    shots.take(page, f"commission-4-done-{width}-{lang}")
    page.click("[data-next-preview]")
    page.wait_for_load_state("networkidle")
    shots.take(page, f"commission-5-preview-{width}-{lang}")
    page.fill("#amount", "1")
    page.click(".checkout button[type=submit]")
    expect(page.locator(".checkout .notice-error")).to_be_visible()
    page.fill("#amount", "12")
    page.click(".checkout button[type=submit]")
    expect(page).to_have_url(re.compile(r"/demo-checkout/"))
    shots.take(page, f"commission-6-checkout-{width}-{lang}")
    page.locator("form button[type=submit]").click()
    expect(page).to_have_url(re.compile(r"/receipts/"))
    page.wait_for_load_state("networkidle")
    shots.take(page, f"commission-7-receipt-painting-{width}-{lang}")
    expect(page.locator(".download-state")).to_be_visible(timeout=900_000)
    page.wait_for_load_state("networkidle")
    shots.take(page, f"commission-8-receipt-delivered-{width}-{lang}")
    page.goto(mail_link(data / "outbox", address, r"http://\S+/a/[A-Za-z0-9_-]+"))
    page.wait_for_load_state("networkidle")
    shots.take(page, f"commission-9-preview-paid-{width}-{lang}")
    context.close()


def others(shots: Shots, browser: Any, base: str, files: dict[str, Path], lang: str, width: str) -> None:
    """A video, the operator's view, the API reference and the 404 page."""
    from playwright.sync_api import expect

    context = browser.new_context(viewport=WIDTHS[width], locale={"en": "en-GB", "es": "es-ES"}[lang])
    page = context.new_page()
    if shots.wanted("video"):
        page.goto(f"{base}/{lang}/")
        page.set_input_files("#photo", str(files["clip"]))
        expect(page.locator("[data-video-player]")).to_be_visible(timeout=600_000)
        page.wait_for_timeout(1500)
        shots.take(page, f"video-{width}-{lang}", full=False)
    if shots.wanted("admin") and lang == "en":  # the operator's view is in English only
        page.goto(f"{base}/admin")
        page.fill("#token", ADMIN_TOKEN)
        page.locator("form button[type=submit]").click()
        expect(page).to_have_url(re.compile(r"/admin/?$"))
        shots.take(page, f"admin-{width}-{lang}")
    if shots.wanted("docs"):
        page.goto(f"{base}/{lang}/docs")
        shots.take(page, f"docs-{width}-{lang}", full=False)
    if shots.wanted("not-found"):
        page.goto(f"{base}/{lang}/no-such-page")
        shots.take(page, f"not-found-{width}-{lang}")
    context.close()


def offline(shots: Shots, browser: Any, lang: str, width: str) -> None:
    """The commission page of a server started offline: no catalog painting downloaded yet."""
    data = Path(tempfile.mkdtemp(prefix="atelier-screenshots-offline-"))
    try:
        with server(data, with_styles=False) as base:
            context = browser.new_context(viewport=WIDTHS[width], locale={"en": "en-GB", "es": "es-ES"}[lang])
            page = context.new_page()
            page.goto(f"{base}/{lang}/commission")
            shots.take(page, f"offline-commission-{width}-{lang}")
            context.close()
    finally:
        shutil.rmtree(data, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs/images/pages")
    parser.add_argument("--only", help="only the pictures whose name starts with this")
    parser.add_argument("--lang", action="append", help="en, es (default: both)")
    parser.add_argument("--width", action="append", choices=sorted(WIDTHS), help="phone, wide (default: both)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    shots = Shots(args.out, args.only)
    from playwright.sync_api import sync_playwright

    data = Path(tempfile.mkdtemp(prefix="atelier-screenshots-"))
    try:
        files = {
            "photo": _photo(SHARED / "images/content/microast_harbor_3415x2160.jpg", 3415, data / "harbor.jpg"),
            "portrait": _photo(SHARED / "images/content/amber.jpg", 1024, data / "amber.jpg"),
            "clip": _clip(SHARED / "images/content/golden_gate.jpg", data / "clip.mp4"),
        }
        with server(data) as base, sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            for lang in args.lang or ["en", "es"]:
                for width in args.width or list(WIDTHS):
                    print(f"{lang} {width}", flush=True)
                    if shots.wanted("instant"):
                        instant(shots, browser, base, files, lang, width)
                    if shots.wanted("commission"):
                        commission(shots, browser, base, data, files, lang, width)
                    if any(shots.wanted(name) for name in ("video", "admin", "docs", "not-found")):
                        others(shots, browser, base, files, lang, width)
                    if shots.wanted("offline"):
                        offline(shots, browser, lang, width)
            browser.close()
    finally:
        shutil.rmtree(data, ignore_errors=True)
    print(f"{len(shots.taken)} screenshots in {_shown(args.out)}")


if __name__ == "__main__":
    sys.exit(main())
