"""Folders of files kept in the blob store and mirrored onto each machine's disk, checked by sha256.

A *bundle* is one folder (a catalog style: style.toml, painting, thumbnail; or a model family:
its weight files). In the store a bundle is its files under content-addressed keys and one
manifest naming them with their sha256 and size::

    <prefix><name>/manifest.json               {"name", "files": [{"path", "sha256", "size"}]}
    <prefix><name>/files/<sha256[:32]>/<path>  the bytes

Publishing uploads the files first and the manifest last (one put, which readers see whole or
not at all), so a machine that syncs mid-publish sees the old bundle or the new one, never a
mix; files the new manifest no longer names are deleted after. One manifest per bundle (not one
index for all) keeps two machines publishing different bundles at once from losing either.

Syncing lists the manifests (one LIST) and reads each (small: a line per file); a bundle whose
manifest's sha256 differs from the one the local folder was synced from (or whose files are not
all there) gets the files whose sha256 differ downloaded into a staging folder (verified as they
arrive), then swapped in with two renames. (The listing's size and time alone would miss a
republish within the same second that keeps the manifest's length: S3 times have 1 s steps.) Unchanged files are hard-linked, not copied (model files are large). A bundle
whose manifest disappeared is removed locally if this mirror put it there; folders the operator
made by hand are never touched. Processes of one machine take turns through a file lock.

No database and nothing above the store: the callers (atelier.service.catalog_sync) decide what
is mirrored and what to do after a sync.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from atelier.store.blobs import BlobInfo, BlobStore, validate_key
from atelier.store.errors import BlobNotFoundError, StoreError

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
#: Where the product keeps its mirrored bundles: the style catalog and the model weights.
CATALOG_PREFIX = "catalog/"
MODELS_PREFIX = "models/"
MIRROR_PREFIXES = (CATALOG_PREFIX, MODELS_PREFIX)
#: What the mirror remembers on each machine, in the local folder (hidden: catalogs skip it).
STATE_FILE = ".mirror.json"
LOCK_FILE = ".mirror.lock"
_CHUNK = 1024 * 1024


class MirrorError(StoreError):
    """A bundle that cannot be published or synced (the message says which and why)."""


@dataclass(frozen=True)
class BundleFile:
    path: str  # relative, with forward slashes
    sha256: str
    size: int


@dataclass(frozen=True)
class Manifest:
    name: str
    files: tuple[BundleFile, ...]

    def to_bytes(self) -> bytes:
        body = {"name": self.name, "files": [{"path": f.path, "sha256": f.sha256, "size": f.size} for f in self.files]}
        return json.dumps(body, indent=1, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        try:
            body = json.loads(data)
            files = tuple(BundleFile(path=str(f["path"]), sha256=str(f["sha256"]), size=int(f["size"])) for f in body["files"])
            return cls(name=str(body["name"]), files=files)
        except (ValueError, KeyError, TypeError) as exc:
            raise MirrorError(f"a manifest that does not read: {exc}") from None

    @property
    def digest(self) -> str:
        """The sha256 of the manifest, i.e. of every file's path, sha256 and size."""
        return hashlib.sha256(self.to_bytes()).hexdigest()


@dataclass
class SyncReport:
    """What one sync did, by bundle name."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    bytes_downloaded: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.removed)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _files_of(folder: Path) -> list[Path]:
    """Every regular file under ``folder``, hidden ones and staging leftovers left out."""
    found = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts) or not path.is_file():
            continue
        found.append(path)
    return found


def _safe_relative(path: str) -> PurePosixPath:
    relative = PurePosixPath(path)
    if relative.is_absolute() or not relative.parts or any(p in ("", ".", "..") or p.startswith(".") for p in relative.parts):
        raise MirrorError(f"a manifest names a file outside its folder: {path!r}")
    return relative


class BundleMirror:
    """The bundles under ``prefix`` of ``blobs``, mirrored into ``local_dir`` (one folder each)."""

    def __init__(self, blobs: BlobStore, prefix: str, local_dir: Path) -> None:
        if not prefix.endswith("/"):
            raise ValueError("a mirror prefix ends with '/'")
        validate_key(prefix.rstrip("/"))
        self.blobs = blobs
        self.prefix = prefix
        self.local_dir = Path(local_dir)

    # -- keys -----------------------------------------------------------------------------------

    def manifest_key(self, name: str) -> str:
        return validate_key(f"{self.prefix}{name}/{MANIFEST}")

    def file_key(self, name: str, file: BundleFile) -> str:
        return validate_key(f"{self.prefix}{name}/files/{file.sha256[:32]}/{file.path}")

    # -- publishing -----------------------------------------------------------------------------

    def manifest_of_folder(self, name: str, folder: Path) -> Manifest:
        files = [
            BundleFile(path=p.relative_to(folder).as_posix(), sha256=sha256_of(p), size=p.stat().st_size)
            for p in _files_of(folder)
        ]
        if not files:
            raise MirrorError(f"{folder} has no files to publish")
        return Manifest(name=name, files=tuple(files))

    def publish(self, name: str, folder: Path) -> Manifest:
        """Put the folder's files in the store, then its manifest; drop files no longer named."""
        folder = Path(folder)
        manifest = self.manifest_of_folder(name, folder)
        previous = self.remote_manifest(name)
        for file in manifest.files:
            key = self.file_key(name, file)
            if self.blobs.exists(key):
                continue  # content-addressed: the same bytes are there already
            self.blobs.put(key, folder / file.path, content_type="application/octet-stream")
        self.blobs.put(self.manifest_key(name), manifest.to_bytes(), content_type="application/json")
        if previous is not None:
            for old in set(previous.files) - set(manifest.files):
                self.blobs.delete(self.file_key(name, old))
        log.info("published %s%s (%d files, %d bytes)", self.prefix, name, len(manifest.files), sum(f.size for f in manifest.files))
        return manifest

    def unpublish(self, name: str) -> bool:
        """Remove a bundle from the store (its manifest first: syncs stop seeing it at once)."""
        manifest = self.remote_manifest(name)
        if manifest is None:
            return False
        self.blobs.delete(self.manifest_key(name))
        for file in manifest.files:
            self.blobs.delete(self.file_key(name, file))
        return True

    # -- reading the store ----------------------------------------------------------------------

    def remote(self) -> dict[str, BlobInfo]:
        """The published bundles: name -> the manifest's listing entry."""
        found = {}
        for info in self.blobs.list(self.prefix):
            rest = info.key[len(self.prefix):]
            name, _, tail = rest.partition("/")
            if tail == MANIFEST:
                found[name] = info
        return found

    def remote_manifest(self, name: str) -> Manifest | None:
        try:
            return Manifest.from_bytes(self.blobs.read(self.manifest_key(name)))
        except BlobNotFoundError:
            return None

    # -- syncing --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.local_dir.mkdir(parents=True, exist_ok=True)
        with (self.local_dir / LOCK_FILE).open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _state(self) -> dict[str, dict[str, Any]]:
        try:
            return dict(json.loads((self.local_dir / STATE_FILE).read_text(encoding="utf-8")))
        except (FileNotFoundError, ValueError):
            return {}

    def _save_state(self, state: dict[str, dict[str, Any]]) -> None:
        path = self.local_dir / STATE_FILE
        temp = path.with_name(f"{STATE_FILE}.{uuid.uuid4().hex[:8]}.part")
        temp.write_text(json.dumps(state, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(temp, path)

    def local_digest(self, name: str) -> str | None:
        """The manifest digest the local copy of ``name`` was synced from (None: not mirrored)."""
        return self._state().get(name, {}).get("digest")

    def sync(self, *, only: set[str] | None = None) -> SyncReport:
        """Bring the local folder in line with the store (``only``: just those bundles)."""
        report = SyncReport()
        with self._locked():
            state = self._state()
            remote = self.remote()
            for name in sorted(remote):
                if only is not None and name not in only:
                    continue
                seen = state.get(name)
                try:
                    manifest = self.remote_manifest(name)
                    if manifest is None:  # unpublished between the listing and now
                        continue
                    if manifest.name != name:
                        raise MirrorError(f"the manifest of {name!r} is for {manifest.name!r}")
                    if seen and seen.get("digest") == manifest.digest and self._matches(name, manifest):
                        report.unchanged.append(name)
                    else:
                        existed = (self.local_dir / name).exists()
                        report.bytes_downloaded += self._install(name, manifest)
                        (report.updated if existed else report.added).append(name)
                    state[name] = {"digest": manifest.digest}
                except (MirrorError, StoreError, OSError) as exc:
                    log.warning("cannot sync %s%s: %s", self.prefix, name, exc)
                    report.failed[name] = str(exc)
            if only is None:
                for name in sorted(set(state) - set(remote)):
                    shutil.rmtree(self.local_dir / name, ignore_errors=True)
                    del state[name]
                    report.removed.append(name)
            self._save_state(state)
        if report.changed:
            log.info(
                "synced %s into %s: added %s, updated %s, removed %s",
                self.prefix, self.local_dir, report.added or "-", report.updated or "-", report.removed or "-",
            )
        return report

    def _matches(self, name: str, manifest: Manifest) -> bool:
        folder = self.local_dir / name
        for file in manifest.files:
            path = folder / file.path
            if not path.is_file() or path.stat().st_size != file.size:
                return False
        return True

    def _install(self, name: str, manifest: Manifest) -> int:
        """Download what differs into a staging folder, then swap it in; bytes downloaded."""
        target = self.local_dir / name
        staging = Path(tempfile.mkdtemp(prefix=f".sync-{name}-", dir=self.local_dir))
        downloaded = 0
        try:
            for file in manifest.files:
                relative = _safe_relative(file.path)
                dest = staging / relative
                dest.parent.mkdir(parents=True, exist_ok=True)
                old = target / relative
                if old.is_file() and old.stat().st_size == file.size and sha256_of(old) == file.sha256:
                    try:
                        os.link(old, dest)
                    except OSError:
                        shutil.copy2(old, dest)
                    continue
                downloaded += self._download(self.file_key(name, file), dest, file)
            trash = None
            if target.exists():
                trash = self.local_dir / f".trash-{name}-{uuid.uuid4().hex[:8]}"
                os.rename(target, trash)
            os.rename(staging, target)
            if trash is not None:
                shutil.rmtree(trash, ignore_errors=True)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return downloaded

    def _download(self, key: str, dest: Path, file: BundleFile) -> int:
        digest = hashlib.sha256()
        size = 0
        with self.blobs.open(key) as stream, dest.open("wb") as out:
            for chunk in iter(lambda: stream.read(_CHUNK), b""):
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
        if digest.hexdigest() != file.sha256 or size != file.size:
            raise MirrorError(
                f"{key}: got {size} bytes with sha256 {digest.hexdigest()[:12]}..., "
                f"the manifest says {file.size} bytes, {file.sha256[:12]}..."
            )
        return size
