"""Bundles of files kept in the blob store and mirrored onto a machine's disk (atelier.store.mirror),
on the local store and the S3 API server."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from atelier.store.blobs import BlobStore, LocalBlobStore, S3BlobStore
from atelier.store.mirror import STATE_FILE, BundleMirror, Manifest, MirrorError
from tests.store.store_fixtures import S3_CREDENTIALS


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    if request.param == "local":
        yield LocalBlobStore(tmp_path / "blobs", signing_key=b"k" * 32, public_url="http://app.test/blobs")
        return
    bucket = f"atelier-{uuid.uuid4().hex[:12]}"
    s3 = S3BlobStore(bucket, "site", endpoint_url=request.getfixturevalue("s3_endpoint"), region="us-east-1", **S3_CREDENTIALS)
    s3.client.create_bucket(Bucket=bucket)
    yield s3
    s3.close()


def _bundle(folder: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return folder


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_published_folder_arrives_whole_on_an_empty_machine(store: BlobStore, tmp_path: Path) -> None:
    files = {"style.toml": b'[title]\nen = "Muse"\n', "painting.jpg": b"\xff\xd8" + bytes(range(256)) * 40, "sub/thumb.jpg": b"t" * 99}
    source = _bundle(tmp_path / "a" / "muse", files)
    manifest = BundleMirror(store, "catalog/", tmp_path / "a").publish("muse", source)
    assert {f.path: f.sha256 for f in manifest.files} == {k: hashlib.sha256(v).hexdigest() for k, v in files.items()}

    other = BundleMirror(store, "catalog/", tmp_path / "b")
    report = other.sync()
    assert report.added == ["muse"] and report.bytes_downloaded == sum(len(v) for v in files.values())
    assert _tree(tmp_path / "b" / "muse") == files
    assert other.local_digest("muse") == manifest.digest
    # nothing changed: the second look reads the manifest and fetches nothing
    again = other.sync()
    assert again.unchanged == ["muse"] and not again.changed and again.bytes_downloaded == 0


def test_a_republished_bundle_fetches_only_the_files_that_changed(store: BlobStore, tmp_path: Path) -> None:
    source = _bundle(tmp_path / "a" / "muse", {"style.toml": b"v1", "painting.jpg": b"p" * 5000})
    publisher = BundleMirror(store, "catalog/", tmp_path / "a")
    publisher.publish("muse", source)
    mirror = BundleMirror(store, "catalog/", tmp_path / "b")
    mirror.sync()
    (source / "style.toml").write_bytes(b"version two")
    publisher.publish("muse", source)
    report = mirror.sync()
    assert report.updated == ["muse"] and report.bytes_downloaded == len(b"version two")
    assert _tree(tmp_path / "b" / "muse") == {"style.toml": b"version two", "painting.jpg": b"p" * 5000}
    # the old style.toml's blob is gone from the store; the painting's is kept (same sha256)
    keys = {info.key for info in store.list("catalog/muse/files/")}
    assert len(keys) == 2


def test_an_unpublished_bundle_goes_but_folders_made_by_hand_stay(store: BlobStore, tmp_path: Path) -> None:
    publisher = BundleMirror(store, "catalog/", tmp_path / "a")
    publisher.publish("muse", _bundle(tmp_path / "a" / "muse", {"style.toml": b"x"}))
    mirror = BundleMirror(store, "catalog/", tmp_path / "b")
    mirror.sync()
    _bundle(tmp_path / "b" / "mine", {"style.toml": b"the operator's own"})
    assert publisher.unpublish("muse")
    report = mirror.sync()
    assert report.removed == ["muse"] and not (tmp_path / "b" / "muse").exists()
    assert (tmp_path / "b" / "mine" / "style.toml").read_bytes() == b"the operator's own"
    assert "muse" not in json.loads((tmp_path / "b" / STATE_FILE).read_text())


def test_a_file_whose_bytes_do_not_match_the_manifest_is_refused(store: BlobStore, tmp_path: Path) -> None:
    publisher = BundleMirror(store, "catalog/", tmp_path / "a")
    manifest = publisher.publish("muse", _bundle(tmp_path / "a" / "muse", {"style.toml": b"good", "painting.jpg": b"p" * 100}))
    mirror = BundleMirror(store, "catalog/", tmp_path / "b")
    mirror.sync()
    painting = next(f for f in manifest.files if f.path == "painting.jpg")
    store.put(publisher.file_key("muse", painting), b"q" * 100, content_type="application/octet-stream")  # damaged in the store
    (tmp_path / "a" / "muse" / "style.toml").write_bytes(b"new")  # forces a re-sync of the bundle
    (tmp_path / "b" / "muse" / "painting.jpg").write_bytes(b"x")  # and the local copy is damaged too
    publisher.publish("muse", tmp_path / "a" / "muse")
    report = mirror.sync()
    assert list(report.failed) == ["muse"] and "sha256" in report.failed["muse"]
    # the machine keeps what it had; no half-installed folder, no staging left behind
    assert _tree(tmp_path / "b" / "muse") == {"style.toml": b"good", "painting.jpg": b"x"}
    assert [p.name for p in (tmp_path / "b").iterdir() if p.name.startswith(".sync-")] == []


def test_a_manifest_cannot_name_a_file_outside_its_folder(store: BlobStore, tmp_path: Path) -> None:
    bad = Manifest.from_bytes(json.dumps({"name": "evil", "files": [{"path": "../../etc/x", "sha256": "0" * 64, "size": 1}]}).encode())
    store.put("catalog/evil/manifest.json", bad.to_bytes(), content_type="application/json")
    report = BundleMirror(store, "catalog/", tmp_path / "b").sync()
    assert "evil" in report.failed and not (tmp_path / "etc").exists()
    with pytest.raises(MirrorError):
        Manifest.from_bytes(b"not json")
