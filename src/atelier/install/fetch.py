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
) -> tuple[int, str]:
    """Stream ``url`` into ``dest``; return (bytes received, sha256 hex).

    Refuses (before or while reading) more than ``limit`` bytes, and a body shorter than the
    ``Content-Length`` the server announced. Progress: ``Progress(stage, step=<bytes>,
    total=<expected_size or Content-Length or 0>)``. Raises :class:`FetchError`; ``dest`` may
    then hold a partial file, which the caller removes.
    """
    where = host(url)
    # Some hosts (Wikimedia among them) refuse requests without a descriptive User-Agent.
    request = urllib.request.Request(url, headers={"User-Agent": user_agent})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 - http(s) only
    except urllib.error.HTTPError as exc:
        raise FetchError(f"{where} answered HTTP {exc.code} ({exc.reason}) for {url}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise FetchError(f"could not reach {where} ({describe(reason)})", unreachable=True) from None
    digest = hashlib.sha256()
    received = 0
    with response:
        announced = response.headers.get("Content-Length")
        length = int(announced) if announced and announced.isdigit() else None
        if length is not None and length > limit:
            raise FetchError(f"{where} offers {length} bytes for {stage}, at most {limit} expected; refusing it")
        total = expected_size or length or 0
        try:
            with dest.open("wb") as out:
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
