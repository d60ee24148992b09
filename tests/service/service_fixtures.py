"""Helpers shared by the service and web tests (plain functions, importable from both)."""

from __future__ import annotations

import io
import socket
from pathlib import Path
from typing import Any

from PIL import Image

from atelier.config import Settings


def make_settings(data_dir: Path, models_dir: Path, **overrides: Any) -> Settings:
    """Settings on ``data_dir`` with the real weights and sizes fit for 2 cores."""
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "models_dir": models_dir,
        "device": "cpu",
        "instant_max_size": 256,
        "instant_batch_window_ms": 10.0,
        "preview_max_size": 96,
        "lease_seconds": 30,
        "workers": 0,
        **LENIENT_CHECK,
    }
    values.update(overrides)
    return Settings(**values)


#: The check before delivery let through: the tests' recipes paint a few iterations (a painting
#: that has not converged, on purpose: it is quick), and what they check is something else.
#: tests/service/commission/test_check.py checks the check with the product's own values.
LENIENT_CHECK = {"quality_max_style_distance": 100.0, "quality_min_style_fall": 0.0}
#: The same, as environment variables for the tests' server and worker processes.
LENIENT_CHECK_ENV = {f"ATELIER_{key.upper()}": str(value) for key, value in LENIENT_CHECK.items()}


def small_jpeg(path: Path, longest: int, *, quality: int = 90) -> bytes:
    """The image at ``path`` scaled to ``longest`` pixels on its longest side, as JPEG bytes."""
    with Image.open(path) as image:
        image = image.convert("RGB")
        image.thumbnail((longest, longest), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=quality)
        return buffer.getvalue()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def install_test_style(services: Any, style_dir: Path) -> Any:
    """Give ``services`` a catalog with the filters and one commissionable painting (The Starry
    Night) and return its entry. Until the style catalog is wired in, this is what lets the
    commission path be tested."""
    from atelier.service.catalog import Catalog, StyleEntry, _filter_entries

    entry = StyleEntry(
        name="starry-night",
        kind="painting",
        titles={"en": "The Starry Night", "es": "La noche estrellada"},
        artist="Vincent van Gogh",
        image_path=style_dir / "starry_night.jpg",
        commission=True,
    )
    services.__dict__["catalog"] = Catalog(services.settings.styles_path, entries=[*_filter_entries(), entry])
    return entry


#: The text :func:`microast_painter` marks its previews with (opacity 0.5, bottom right).
PREVIEW_MARK = "ATELIER PREVIEW"


def microast_painter(services: Any, *, steps: int = 3, delay: float = 0.0) -> Any:
    """A commission painter made of the instant engine: MicroAST at ``max_size``, reported as
    ``steps`` progress steps with an intermediate picture each (``delay`` seconds apart), then
    watermarked unless ``watermark`` is False (the paid HD version). Real weights; quick enough
    for tests of the commission plumbing."""
    import time

    from atelier.art.blocks.finish import watermark as mark
    from atelier.art.blocks.images import fit_longest, to_pil, to_tensor
    from atelier.art.progress import Progress

    def paint(photo: Any, style: Any, *, max_size: int, progress: Any, watermark: bool = True) -> Any:
        engine = services.loader.style_engine("microast")
        content = to_tensor(fit_longest(photo, max_size))
        painting = to_tensor(fit_longest(style.load_image(), 256))
        picture = None
        for step in range(1, steps + 1):
            picture = to_pil(engine.stylize(content, painting, alpha=step / steps))
            progress(Progress(f"pass {step}/{steps}", step, steps, preview=picture))
            time.sleep(delay)
        assert picture is not None
        return mark(picture, text=PREVIEW_MARK, opacity=0.5) if watermark else picture

    return paint


def add_catalog_style(settings: Settings, style_dir: Path, *, passes: str = "48x4,96x4", name: str = "starry_night") -> Any:
    """Put The Starry Night in the settings' style catalog with a tiny Gatys recipe (two passes
    of a few iterations), as `atelier styles add` would: the real commission painter, at a cost
    fit for tests."""
    from atelier.install.styles import StyleRecipe, add_style

    return add_style(
        style_dir / "starry_night.jpg",
        name=name,
        styles_dir=settings.styles_path,
        titles={"en": "The Starry Night", "es": "La noche estrellada"},
        artist="Vincent van Gogh",
        recipe=StyleRecipe(base="auto", passes=passes),
    )


def tiny_clip(path: Path, photo: Path, *, frames: int = 8, width: int = 96, height: int = 64, fps: int = 12) -> Path:
    """A short H.264 clip panning across ``photo``: a real video, small enough to paint fast."""
    import av
    import numpy as np

    with Image.open(photo) as image:
        source = np.asarray(image.convert("RGB").resize((width + 4 * frames, height + 2 * frames)))
    container = av.open(str(path), "w")
    stream = container.add_stream("libx264", rate=fps)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    for i in range(frames):
        frame = np.ascontiguousarray(source[2 * i : 2 * i + height, 4 * i : 4 * i + width])
        for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return path


class Inbox:
    """An aiosmtpd handler keeping what it receives; ``refuse`` answers 550 to those addresses."""

    def __init__(self) -> None:
        import email.message

        self.messages: list[email.message.EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.refuse: set[str] = set()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # type: ignore[no-untyped-def]  # noqa: N802
        if address in self.refuse:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]  # noqa: N802
        import email
        import email.policy

        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))  # type: ignore[arg-type]
        return "250 Message accepted"

    def wait_for(self, count: int = 1, timeout: float = 60.0) -> list[Any]:
        """The messages once at least ``count`` arrived (AssertionError after ``timeout`` s)."""
        import time

        deadline = time.monotonic() + timeout
        while len(self.messages) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.messages)} mail(s) arrived within {timeout} s, expected {count}")
            time.sleep(0.1)
        return list(self.messages)


def smtp_server() -> tuple[Inbox, Any, int]:
    """A real SMTP server on a free loopback port: (inbox, controller to stop, port)."""
    from aiosmtpd.controller import Controller

    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    return inbox, controller, port


def link_in(message: Any, pattern: str = r"https?://\S+/a/[A-Za-z0-9_-]+") -> str:
    """The first link matching ``pattern`` in a mail's plain-text part."""
    import re

    body = message.get_body(("plain",)).get_content()
    found = re.search(pattern, body)
    assert found is not None, body
    return found.group(0)
