"""Stream one HTTP(S) file to disk, bounded in size and hashed on the way.

The model registry (:mod:`atelier.install.models`) and the style catalog (:mod:`atelier.install.styles`)
both download official files. They share this one streaming loop; each turns a
:class:`FetchError` into its own error type with its own advice (``atelier models import DIR``
for weights, "are you offline?" for paintings). Installing the file (temporary name beside the
destination, checks, then rename) stays with the caller, which knows what to check.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import socket
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from atelier.art.progress import Progress, ProgressCallback

__all__ = ["FetchError", "describe", "fetch", "host"]

CHUNK = 1024 * 1024


class FetchError(Exception):
    """A download that did not complete; ``unreachable`` when the host never answered at all
    (offline, DNS, refused, timed out), as opposed to a host that answered badly."""

    def __init__(self, message: str, *, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable


def fetch(
    url: str,
    dest: Path,
    *,
    limit: int,
    expected_size: int | None = None,
    stage: str,
    user_agent: str,
    timeout: float,
    progress: ProgressCallback | None = None,
    resume: bool = False,
) -> tuple[int, str]:
    """Stream ``url`` into ``dest``; return (bytes of the whole file, sha256 hex of it).

    Refuses (before or while reading) more than ``limit`` bytes, and a body shorter than the
    ``Content-Length`` the server announced. Progress: ``Progress(stage, step=<bytes>,
    total=<expected_size or Content-Length or 0>)``. Raises :class:`FetchError`; ``dest`` may
    then hold a partial file. With ``resume``, a partial ``dest`` left by an earlier try is
    continued where it stopped (an HTTP Range request; a server that answers with the whole
    file instead starts it again), so a large download cut off by the network is not fetched
    twice; without it the caller removes the partial file.
    """
    where = host(url)
    have = dest.stat().st_size if resume and dest.is_file() else 0
    # Some hosts (Wikimedia among them) refuse requests without a descriptive User-Agent.
    headers = {"User-Agent": user_agent}
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 - http(s) only
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing after what we have: the file was whole already
            return have, _sha256_of(dest)
        raise FetchError(f"{where} answered HTTP {exc.code} ({exc.reason}) for {url}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise FetchError(f"could not reach {where} ({describe(reason)})", unreachable=True) from None
    digest = hashlib.sha256()
    received = 0
    with response:
        announced = response.headers.get("Content-Length")
        length = int(announced) if announced and announced.isdigit() else None
        continuing = have and response.status == 206 and _range_start(response.headers.get("Content-Range")) == have
        if continuing:
            received = have
            with dest.open("rb") as kept:
                while chunk := kept.read(CHUNK):
                    digest.update(chunk)
            length = None if length is None else have + length
        if length is not None and length > limit:
            raise FetchError(f"{where} offers {length} bytes for {stage}, at most {limit} expected; refusing it")
        total = expected_size or length or 0
        try:
            with dest.open("ab" if continuing else "wb") as out:
                while chunk := response.read(CHUNK):
                    received += len(chunk)
                    if received > limit:
                        raise FetchError(f"{where} sent more than {limit} bytes for {stage}; refusing it")
                    digest.update(chunk)
                    out.write(chunk)
                    if progress is not None:
                        progress(Progress(stage=stage, step=received, total=total))
        except (OSError, http.client.HTTPException) as exc:
            if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
                raise FetchError(f"the disk is full while writing {stage} ({dest.parent})") from None
            raise FetchError(f"the download of {stage} from {where} was interrupted ({describe(exc)})") from None
    if length is not None and received != length:
        raise FetchError(f"the download of {stage} from {where} was cut off ({received} of {length} bytes)")
    return received, digest.hexdigest()


def _range_start(content_range: str | None) -> int | None:
    """The first byte of a ``Content-Range: bytes START-END/TOTAL`` answer."""
    if not content_range or not content_range.startswith("bytes "):
        return None
    start = content_range[6:].split("-", 1)[0].strip()
    return int(start) if start.isdigit() else None


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as kept:
        while chunk := kept.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def host(url: str) -> str:
    """The host name of ``url`` (for messages), or the url itself when it has none."""
    return urlsplit(url).hostname or url


def describe(reason: object) -> str:
    """A short human reason for a network failure."""
    if isinstance(reason, socket.gaierror):
        return "the name does not resolve"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return "timed out"
    if isinstance(reason, ssl.SSLError):
        return f"TLS error: {reason}"
    text = str(reason).strip()
    return text or type(reason).__name__
