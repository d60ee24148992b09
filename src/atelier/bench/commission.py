"""``atelier bench commission``: a commission's whole journey in real processes, today's path
beside the new one, in one run.

For each path a fresh ``atelier serve --workers 1`` (the embedded default: SQLite, a local blob
folder, the worker inside the server, mail written to the outbox folder) with one catalog style
(a painting and its Gatys recipe, ``auto`` -- the installed VGG weights decide -- unless
``--passes`` gives sizes): the photo is ordered over HTTP (``POST /api/v1/artworks``), the
preview mail is waited for in the outbox folder, the demo payment is made the way its confirm
button makes it (:func:`atelier.service.payments.confirm_demo_payment`, on the same database),
and the download mail is waited for. Wall seconds from the order to the preview mail and from
the payment to the download mail; the server's resident memory before the HD job, its peak
(VmHWM) and ``settle`` seconds after the download mail; the HD job's recipe and final Gatys
objective (from the job's result).

Paths:

* ``baseline``: the way before issues 14 and 15 (``ATELIER_HD_FROM_PREVIEW=false``,
  ``ATELIER_HD_AHEAD=false``): the HD job paints the whole recipe again from the photo, with
  neural-style's fixed L-BFGS steps (``line_search = false``) and no check before delivery.
* ``new``: the HD painted on from the preview's painting, ahead of payment when the worker is
  idle. Two orders: one paid the moment its preview mail arrives (the ahead painting has just
  started: the payment makes it the paid job), one paid once its HD was painted ahead.
"""

from __future__ import annotations

import email
import logging
from dataclasses import replace
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from atelier.bench.server import serve
from atelier.bench.timing import Row
from atelier.extras import need

log = logging.getLogger(__name__)

STYLE = "starry_night"


def _rss_mib(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process, in MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields.get("VmRSS", float("nan")), fields.get("VmHWM", float("nan"))


def _reset_peak(pid: int) -> None:
    # Writing 5 to clear_refs resets VmHWM to the current RSS (Linux >= 4.0; our own child).
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        log.warning("cannot reset the peak RSS of %d; the peak is the process's whole life", pid)


def _mails(outbox: Path) -> list[tuple[Path, str]]:
    found = []
    for path in sorted(outbox.glob("*.eml")) if outbox.is_dir() else []:
        message = email.message_from_bytes(path.read_bytes())
        found.append((path, str(message.get("Subject", ""))))
    return found


def _wait(what: str, check: Callable[[], Any], *, timeout: float, poll: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"bench commission: no {what} within {timeout:.0f} s")
        time.sleep(poll)


class Journey:
    """One server, its data folder, and the orders made on it."""

    def __init__(self, server: Any, data: Path, settings: Any) -> None:
        from atelier.service.context import Services

        self.server = server
        self.data = data
        self.outbox = data / "outbox"
        self.services = Services.open(settings)
        self.http = need("httpx").Client(base_url=server.url, timeout=120)
        #: The delivered HD pictures (JPEG bytes) by order label.
        self.delivered: dict[str, bytes] = {}

    def close(self) -> None:
        self.http.close()
        self.services.close()

    def mail_count(self) -> int:
        return len(_mails(self.outbox))

    def order(self, photo: bytes) -> str:
        answer = self.http.post(
            "/api/v1/artworks",
            data={"style_name": STYLE, "email": "bench@example.com", "locale": "en"},
            files={"content": ("photo.jpg", photo, "image/jpeg")},
        )
        if answer.status_code != 201:
            raise RuntimeError(f"the order was refused: {answer.status_code} {answer.text[:300]}")
        return str(answer.json()["id"])

    def pay(self, public_id: str) -> None:
        from atelier.service import payments

        started = payments.start_checkout(
            self.services, artwork=public_id, amount_minor=500, currency="USD", locale="en", base_url=self.server.url
        )
        payments.confirm_demo_payment(self.services, started.reference)

    def artwork(self, public_id: str) -> Any:
        from atelier.service.artworks import get_artwork

        return get_artwork(self.services, public_id)

    def hd_result(self, public_id: str) -> dict[str, Any]:
        """The result of the job that painted the artwork's HD picture (ahead, or paid)."""
        from atelier.service.commission.stages import HD_AHEAD_JOB, HD_JOB

        key = f"hd/{public_id}.jpg"
        results = []
        for kind in (HD_JOB, HD_AHEAD_JOB):
            job = self.services.queue.find(kind, key)
            if job is not None and job.result:
                results.append(job.result)
        painted = [r for r in results if "objective" in r or "recipe" in r]
        return painted[0] if painted else (results[0] if results else {})

    def check_painted(self, public_id: str) -> None:
        """Refuse to go on when the mail said the preview could not be painted (a recipe too
        short for the check before delivery, say: give more iterations)."""
        from atelier.service.artworks import get_artwork

        artwork = get_artwork(self.services, public_id)
        if artwork is not None and artwork.status == "failed":
            raise RuntimeError(f"bench commission: the preview was not painted ({artwork.error or 'failed'})")

    def ahead_done(self, public_id: str) -> bool:
        from atelier.service.commission.stages import HD_AHEAD_JOB

        job = self.services.queue.find(HD_AHEAD_JOB, f"hd/{public_id}.jpg")
        return job is not None and job.status == "done"


def _one_order(journey: Journey, photo: bytes, *, path: str, label: str, wait_ahead: bool, settle: float, timeout: float) -> Row:
    pid = journey.server.pid
    mails = journey.mail_count()
    began = time.perf_counter()
    public_id = journey.order(photo)
    _wait("preview mail", lambda: journey.mail_count() > mails, timeout=timeout)
    to_preview = time.perf_counter() - began
    journey.check_painted(public_id)
    waited_ahead = 0.0
    if wait_ahead:
        began = time.perf_counter()
        _wait("HD painted ahead", lambda: journey.ahead_done(public_id), timeout=timeout)
        waited_ahead = time.perf_counter() - began
    before, _ = _rss_mib(pid)
    _reset_peak(pid)
    mails = journey.mail_count()
    began = time.perf_counter()
    journey.pay(public_id)
    _wait("download mail", lambda: journey.mail_count() > mails, timeout=timeout)
    to_download = time.perf_counter() - began
    right_after, peak = _rss_mib(pid)
    time.sleep(settle)
    after, _ = _rss_mib(pid)
    result = journey.hd_result(public_id)
    figures = {
        "order_to_preview_mail_s": round(to_preview, 1),
        "pay_to_download_mail_s": round(to_download, 1),
        "rss_before_hd_mib": round(before),
        "rss_peak_mib": round(peak),
        "rss_at_download_mail_mib": round(right_after),
        f"rss_{settle:g}s_after_mib": round(after),
        "rss_after_over_before": round(after / before, 2) if before else float("nan"),
    }
    if wait_ahead:
        figures["hd_ahead_s"] = round(waited_ahead, 1)
    if "objective" in result:
        figures["objective_own_size"] = float(result["objective"])
    note = str(result.get("recipe") or "")
    journey.delivered[label] = journey.services.blobs.read(f"hd/{public_id}.jpg")
    log.info("%s %s: %s", path, label, figures)
    return Row(
        group="commission",
        name=f"{path}: {label}",
        seconds=to_download,
        unit="commission",
        peak_mb=peak,
        params={"path": path},
        note=note,
        figures=figures,
    )


def bench_commission(
    *,
    models_dir: Path,
    photo: Path,
    painting: Path,
    passes: str | None = None,
    preview_size: int | None = None,
    baseline: bool = True,
    new: bool = True,
    settle: float = 60.0,
    timeout: float = 3600.0,
    workdir: Path | None = None,
    threads: int | None = None,
) -> list[Row]:
    """The journeys (see the module's docstring); one row per paid order."""
    from atelier.config import Settings
    from atelier.install.styles import StyleRecipe, add_style

    from atelier.service.painting import installed_vgg

    installed_vgg(models_dir)  # no weights: say so now, not after three failed attempts per path
    photo_bytes = photo.read_bytes()
    root = Path(tempfile.mkdtemp(prefix="atelier-bench-commission-", dir=workdir))
    rows: list[Row] = []
    pictures: dict[str, bytes] = {}
    paths = [p for p, wanted in (("baseline", baseline), ("new", new)) if wanted]
    try:
        for path in paths:
            data = root / path
            styles = data / "styles"
            add_style(
                painting, name=STYLE, styles_dir=styles, titles={"en": "The Starry Night", "es": "La noche estrellada"},
                artist="Vincent van Gogh",
                recipe=StyleRecipe(base="auto", passes=passes, all={"line_search": False} if path == "baseline" else {}),
            )
            env = {
                "ATELIER_DATA_DIR": str(data),
                "ATELIER_MODELS_DIR": str(models_dir),
                "ATELIER_STYLES_DIR": str(styles),
                "ATELIER_HD_FROM_PREVIEW": "false" if path == "baseline" else "true",
                "ATELIER_HD_AHEAD": "false" if path == "baseline" else "true",
            }
            if path == "baseline":  # no check before delivery then
                env |= {"ATELIER_QUALITY_MAX_STYLE_DISTANCE": "1000", "ATELIER_QUALITY_MIN_STYLE_FALL": "0"}
            if preview_size:
                env["ATELIER_PREVIEW_MAX_SIZE"] = str(preview_size)
            if threads:
                env["ATELIER_THREADS"] = str(threads)
            with serve(settings=env, log_path=root / f"{path}.log", workers=1) as server:
                env["ATELIER_PUBLIC_URL"] = server.url
                # The bench's own view of the same database and blobs (no workers of its own).
                settings = Settings(**{k.removeprefix("ATELIER_").lower(): v for k, v in env.items()}, workers=0)
                journey = Journey(server, data, settings)
                try:
                    if path == "baseline":
                        rows.append(_one_order(journey, photo_bytes, path=path, label="paid at the preview mail", wait_ahead=False, settle=settle, timeout=timeout))
                    else:
                        rows.append(_one_order(journey, photo_bytes, path=path, label="paid at the preview mail", wait_ahead=False, settle=settle, timeout=timeout))
                        rows.append(_one_order(journey, photo_bytes, path=path, label="paid after the HD was painted ahead", wait_ahead=True, settle=settle, timeout=timeout))
                    pictures.update({f"{path}: {label}": data for label, data in journey.delivered.items()})
                finally:
                    journey.close()
    except BaseException:
        log.error("bench commission stopped; the servers' logs are kept in %s", root)
        raise
    else:
        shutil.rmtree(root, ignore_errors=True)
    _objectives(rows, pictures, models_dir=models_dir, photo=photo, painting=painting, passes=passes)
    return rows


def _objectives(rows: list[Row], pictures: dict[str, bytes], *, models_dir: Path, photo: Path, painting: Path, passes: str | None) -> None:
    """Every delivered HD picture measured the same way: shrunk to one size (the smallest
    delivered's half: the new path's painted size), the Gatys objective of the style's last
    pass at that size (content + style + tv on its layers, :func:`measure_objective`), against
    the same photo and painting."""
    import io

    from PIL import Image

    from atelier.art.blocks.images import fit_longest, to_tensor
    from atelier.art.engines.gatys import measure_objective
    from atelier.art.quality import measure_distances
    from atelier.install.styles import StyleRecipe
    from atelier.service.painting import STYLE_IMAGE_SIZE, load_encoder

    if not pictures:
        return
    encoder, _ = load_encoder(models_dir)
    recipe = StyleRecipe(base="auto", passes=passes).resolve(encoder.available_layers, name=STYLE)
    opened = {name: Image.open(io.BytesIO(data)).convert("RGB") for name, data in pictures.items()}
    size = min(max(p.size) for p in opened.values()) // 2
    spec = replace(recipe.passes[-1], size=size)
    with Image.open(photo) as image:
        content = to_tensor(fit_longest(image.convert("RGB"), size))
    with Image.open(painting) as image:
        painting_image = image.convert("RGB")
        style = to_tensor(fit_longest(painting_image, STYLE_IMAGE_SIZE))
    with Image.open(photo) as image:
        photo_image = image.convert("RGB")
    for row in rows:
        picture = opened.get(row.name)
        if picture is None:
            continue
        shrunk = to_tensor(picture.resize((content.shape[-1], content.shape[-2]), Image.Resampling.LANCZOS))
        measured = measure_objective(encoder, shrunk, content, [style], spec=spec)
        row.figures[f"objective_delivered_at_{size}"] = round(measured.total, 4)
        # The quality record's two numbers too (art/quality: 1 = the photo, 0 = the painting).
        distances = measure_distances(picture, photo=photo_image, painting=painting_image, encoder=encoder)
        row.figures["style_distance"] = round(distances.style, 4)
        row.figures["content_distance"] = round(distances.content, 4)
