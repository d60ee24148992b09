"""Blob storage: keys, the local folder, S3 (moto on loopback), presigned uploads and links."""

from __future__ import annotations

import io
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from atelier.store.blobs import (
    BlobStore,
    LocalBlobStore,
    S3BlobStore,
    blob_store_from_url,
    check_post_policy,
    encode_policy,
    new_key,
    validate_key,
)
from atelier.store.errors import (
    BlobNotFoundError,
    InvalidKeyError,
    PolicyError,
    StorageConfigError,
)
from tests.store.store_fixtures import S3_CREDENTIALS, free_port

JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4  # header bytes are enough for a store


# ------------------------------------------------------------------------------------------------
# keys


def test_new_keys_are_dated_random_and_valid() -> None:
    when = datetime(2026, 11, 3, tzinfo=UTC)
    a, b = new_key("uploads", ".jpg", now=when), new_key("uploads", "jpg", now=when)
    assert a.startswith("uploads/2026/11/") and a.endswith(".jpg")
    assert b.endswith(".jpg") and a != b
    assert len(a.rsplit("/", 1)[1]) == 32 + 4  # a uuid4 in hex: 122 random bits
    assert validate_key(a) == a


@pytest.mark.parametrize(
    "key",
    [
        "",
        "/etc/passwd",
        "../escape.jpg",
        "uploads/../../escape.jpg",
        "uploads/./x.jpg",
        "uploads//x.jpg",
        ".hidden",
        "uploads/.meta",
        "uploads\\x.jpg",
        "uploads/x.jpg/",
        "uploads/x y.jpg",
        "uploads/${filename}",
        "uploads/caf\u00e9.jpg",
        "a" * 600,
    ],
)
def test_keys_that_could_escape_or_surprise_are_refused(key: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidKeyError):
        validate_key(key)
    store = LocalBlobStore(tmp_path)
    with pytest.raises(InvalidKeyError):
        store.put(key, b"x", content_type="image/jpeg")
    assert not any(tmp_path.parent.glob("escape*"))


@pytest.mark.parametrize("kind,ext", [("Uploads", ".jpg"), ("up/loads", ".jpg"), ("uploads", ".j/pg"), ("uploads", ".../x")])
def test_new_key_refuses_odd_kinds_and_extensions(kind: str, ext: str) -> None:
    with pytest.raises(InvalidKeyError):
        new_key(kind, ext)


# ------------------------------------------------------------------------------------------------
# the same behaviour from both stores


@pytest.fixture
def s3_store(s3_endpoint: str) -> Iterator[S3BlobStore]:
    bucket = f"atelier-{uuid.uuid4().hex[:12]}"
    store = S3BlobStore(bucket, "site/blobs", endpoint_url=s3_endpoint, region="eu-west-1", **S3_CREDENTIALS)
    store.client.create_bucket(
        Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )
    yield store
    store.close()


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "local":
        return LocalBlobStore(tmp_path / "blobs", signing_key=b"k" * 32, public_url="http://app.test/blobs")
    return request.getfixturevalue("s3_store")


def test_a_blob_put_comes_back_with_its_bytes_size_and_content_type(store: BlobStore) -> None:
    key = new_key("uploads", ".jpg")
    info = store.put(key, JPEG, content_type="image/jpeg")
    assert (info.key, info.size, info.content_type) == (key, len(JPEG), "image/jpeg")
    assert abs((info.modified - datetime.now(UTC)).total_seconds()) < 120
    assert store.read(key) == JPEG
    with store.open(key) as stream:
        assert stream.read(4) == JPEG[:4]
    assert store.exists(key)
    assert store.stat(key).content_type == "image/jpeg"


def test_put_takes_file_objects_and_paths_and_replaces_what_was_there(store: BlobStore, tmp_path: Path) -> None:
    key = new_key("previews", ".png")
    store.put(key, io.BytesIO(b"first"), content_type="image/png")
    source = tmp_path / "second.webp"
    source.write_bytes(b"second version")
    store.put(key, source, content_type="image/webp")
    assert store.read(key) == b"second version"
    assert store.stat(key).content_type == "image/webp"


def test_missing_blobs_are_reported_as_such(store: BlobStore) -> None:
    key = new_key("uploads", ".jpg")
    assert not store.exists(key)
    with pytest.raises(BlobNotFoundError):
        store.stat(key)
    with pytest.raises(BlobNotFoundError):
        store.read(key)
    store.delete(key)  # deleting nothing is fine


def test_delete_removes_the_blob(store: BlobStore) -> None:
    key = new_key("uploads", ".jpg")
    store.put(key, b"x", content_type="image/jpeg")
    store.delete(key)
    assert not store.exists(key)
    assert [b.key for b in store.list()] == []


def test_list_gives_every_blob_under_a_prefix_in_key_order(store: BlobStore) -> None:
    keys = sorted(
        [new_key("uploads", ".jpg") for _ in range(3)] + [new_key("previews", ".png") for _ in range(2)]
    )
    for key in keys:
        store.put(key, key.encode(), content_type="application/octet-stream")
    assert [b.key for b in store.list()] == keys
    uploads = [b for b in store.list("uploads/")]
    assert [b.key for b in uploads] == [k for k in keys if k.startswith("uploads/")]
    assert all(b.size == len(b.key) for b in uploads)
    assert [b.key for b in store.list("previews/20")] == [k for k in keys if k.startswith("previews/")]
    assert list(store.list("nothing/")) == []


def test_presigned_get_links_serve_the_blob_and_then_expire(store: BlobStore) -> None:
    key = new_key("hd", ".jpg")
    store.put(key, JPEG, content_type="image/jpeg")
    link = store.presigned_get(key, expires_in=3, filename="Mi cuadro.jpg")
    query = {k: v[0] for k, v in parse_qs(urlparse(link).query).items()}
    if isinstance(store, LocalBlobStore):
        assert urlparse(link).path == f"/blobs/{key}"
        args = (query["expires"], query["signature"])
        assert store.verify_get(key, *args, filename=query["filename"])
        assert not store.verify_get(key, query["expires"], "0" * 64, filename=query["filename"])
        assert not store.verify_get(key, str(int(query["expires"]) + 60), query["signature"], filename=query["filename"])
        assert not store.verify_get(new_key("hd", ".jpg"), *args, filename=query["filename"])
        assert not store.verify_get(key, *args, filename="other.jpg")
        expires = float(query["expires"])
    else:
        response = httpx.get(link)
        assert response.status_code == 200, response.text
        assert response.content == JPEG
        assert "attachment" in response.headers["content-disposition"]
        assert "Mi%20cuadro.jpg" in response.headers["content-disposition"]
        signed = datetime.strptime(query["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        expires = signed.timestamp() + int(query["X-Amz-Expires"])
    time.sleep(max(0.0, expires - time.time()) + 1.1)
    if isinstance(store, LocalBlobStore):
        assert not store.verify_get(key, query["expires"], query["signature"], filename=query["filename"])
    else:
        assert httpx.get(link).status_code == 403


# ------------------------------------------------------------------------------------------------
# presigned POST: a browser-style multipart upload


def _browser_post(post_url: str, fields: dict[str, str], data: bytes, content_type: str) -> httpx.Response:
    # As a browser form does it: the policy fields first, the file last.
    return httpx.post(post_url, data=fields, files={"file": ("photo.jpg", data, content_type)})


def test_a_browser_upload_that_keeps_to_the_policy_is_stored(s3_store: S3BlobStore) -> None:
    key = new_key("uploads", ".jpg")
    post = s3_store.presigned_post(key, content_type="image/jpeg", max_bytes=4096)
    assert post.fields["key"] == f"site/blobs/{key}"  # the prefix and our generated key, fixed
    response = _browser_post(post.url, post.fields, JPEG, "image/jpeg")
    assert response.status_code == 204, response.text
    assert s3_store.read(key) == JPEG
    assert s3_store.stat(key).content_type == "image/jpeg"


@pytest.mark.parametrize(
    "change,refusal",
    [
        ("too big", "EntityTooLarge"),
        ("empty", "EntityTooSmall"),
        ("wrong type", "Policy Condition failed"),
        ("other key", "Policy Condition failed"),
        ("extra field", "Extra input fields"),
        ("forged policy", "SignatureDoesNotMatch"),
    ],
)
def test_a_browser_upload_that_breaks_the_policy_is_refused(s3_store: S3BlobStore, change: str, refusal: str) -> None:
    key = new_key("uploads", ".jpg")
    post = s3_store.presigned_post(key, content_type="image/jpeg", max_bytes=len(JPEG))
    fields, data = dict(post.fields), JPEG
    if change == "too big":
        data = JPEG + b"\0"
    elif change == "empty":
        data = b""
    elif change == "wrong type":
        fields["Content-Type"] = "text/html"
    elif change == "other key":
        fields["key"] = f"site/blobs/{new_key('uploads', '.jpg')}"
    elif change == "extra field":
        fields["acl"] = "public-read"
    elif change == "forged policy":
        fields["policy"] = encode_policy(datetime.now(UTC) + timedelta(hours=1), [["content-length-range", 0, 10**12]])
    response = _browser_post(post.url, fields, data, fields["Content-Type"])
    assert response.status_code in (400, 403)
    assert refusal in response.text
    assert not s3_store.exists(key)
    assert list(s3_store.list()) == []


def test_an_expired_upload_policy_is_refused(s3_store: S3BlobStore) -> None:
    key = new_key("uploads", ".jpg")
    post = s3_store.presigned_post(key, content_type="image/jpeg", max_bytes=4096, expires_in=1)
    time.sleep(2.1)
    response = _browser_post(post.url, post.fields, JPEG, "image/jpeg")
    assert response.status_code == 403 and "Policy expired" in response.text
    assert not s3_store.exists(key)


# ------------------------------------------------------------------------------------------------
# the local store's own policies (checked by the web app's upload endpoint)


def test_local_presigned_post_accepts_a_conforming_upload(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path, signing_key=b"s" * 32, public_url="http://app.test/blobs")
    key = new_key("uploads", ".jpg")
    post = store.presigned_post(key, content_type="image/jpeg", max_bytes=4096)
    assert post.url == "http://app.test/blobs"
    info = store.accept_post(post.fields, io.BytesIO(JPEG))
    assert (info.key, info.size, info.content_type) == (key, len(JPEG), "image/jpeg")


@pytest.mark.parametrize("change", ["too big", "wrong type", "other key", "bad signature", "extra field", "expired"])
def test_local_presigned_post_refuses_what_breaks_the_policy(tmp_path: Path, change: str) -> None:
    store = LocalBlobStore(tmp_path, signing_key=b"s" * 32, public_url="http://app.test/blobs")
    key = new_key("uploads", ".jpg")
    post = store.presigned_post(key, content_type="image/jpeg", max_bytes=len(JPEG), expires_in=-1 if change == "expired" else 60)
    fields, data = dict(post.fields), JPEG
    if change == "too big":
        data += b"\0"
    elif change == "wrong type":
        fields["Content-Type"] = "image/svg+xml"
    elif change == "other key":
        fields["key"] = new_key("uploads", ".jpg")
    elif change == "bad signature":
        fields["signature"] = "0" * 64
    elif change == "extra field":
        fields["success_action_redirect"] = "http://evil.test/"
    with pytest.raises(PolicyError):
        store.accept_post(fields, data)
    assert list(store.list()) == []


def test_post_policy_rules_follow_s3() -> None:
    soon = datetime.now(UTC) + timedelta(minutes=5)
    policy = encode_policy(
        soon,
        [{"key": "uploads/a.jpg"}, ["starts-with", "$Content-Type", "image/"], ["content-length-range", 10, 20]],
    )
    fields = {"key": "uploads/a.jpg", "content-type": "image/png", "policy": policy}
    check_post_policy(policy, fields, 15)
    for size in (9, 21):
        with pytest.raises(PolicyError, match="bytes"):
            check_post_policy(policy, fields, size)
    with pytest.raises(PolicyError, match="start with"):
        check_post_policy(policy, {**fields, "content-type": "text/html"}, 15)
    with pytest.raises(PolicyError, match="lacks"):
        check_post_policy(policy, {"key": "uploads/a.jpg", "policy": policy}, 15)
    with pytest.raises(PolicyError, match="expired"):
        check_post_policy(policy, fields, 15, now=soon + timedelta(seconds=1))
    with pytest.raises(PolicyError, match="malformed"):
        check_post_policy("not base64 json", fields, 15)


def test_local_links_need_a_signing_key_and_a_public_url(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    with pytest.raises(StorageConfigError):
        store.presigned_get(new_key("hd", ".jpg"))
    with pytest.raises(StorageConfigError):
        store.presigned_post(new_key("uploads", ".jpg"), content_type="image/jpeg", max_bytes=10)


# ------------------------------------------------------------------------------------------------
# local specifics


def test_local_writes_are_atomic_readers_never_see_half_a_blob(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    key = new_key("previews", ".png")
    old, new = b"o" * 2_000_000, b"n" * 2_000_000
    store.put(key, old, content_type="image/png")
    seen: set[bytes] = set()
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            data = store.read(key)
            seen.add(data[:1] + data[-1:] + bytes([len(data) == len(old)]))

    thread = threading.Thread(target=reader)
    thread.start()
    for i in range(10):
        store.put(key, new if i % 2 == 0 else old, content_type="image/png")
    stop.set()
    thread.join()
    assert seen <= {b"oo\x01", b"nn\x01"}
    assert list((tmp_path / ".partial").iterdir()) == []


def test_local_store_never_follows_a_link_out_of_its_folder(tmp_path: Path) -> None:
    root, outside = tmp_path / "blobs", tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    store = LocalBlobStore(root)
    (root / "uploads").symlink_to(outside, target_is_directory=True)
    with pytest.raises(InvalidKeyError):
        store.read("uploads/secret.txt")


def test_local_listing_skips_partial_writes_and_metadata(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    key = new_key("uploads", ".jpg")
    store.put(key, b"x", content_type="image/jpeg")
    (tmp_path / ".partial" / "leftover").write_bytes(b"half")
    assert [b.key for b in store.list()] == [key]
    assert store.sweep_partial(timedelta(0)) == 1


def test_delete_tidies_empty_folders(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    key = new_key("uploads", ".jpg")
    store.put(key, b"x", content_type="image/jpeg")
    store.delete(key)
    assert not (tmp_path / "uploads").exists()


# ------------------------------------------------------------------------------------------------
# from settings


def test_storage_urls_name_the_store(tmp_path: Path) -> None:
    local = blob_store_from_url((tmp_path / "b").as_uri())
    assert isinstance(local, LocalBlobStore) and local.root == (tmp_path / "b").resolve()
    s3 = blob_store_from_url(
        "s3://my-bucket/atelier/prod", endpoint_url="http://127.0.0.1:1", region="eu-west-1", **S3_CREDENTIALS
    )
    assert isinstance(s3, S3BlobStore)
    assert (s3.bucket, s3.prefix) == ("my-bucket", "atelier/prod/")
    for bad in ("ftp://host/x", "s3:///no-bucket", "file://remote-host/x", "/just/a/path"):
        with pytest.raises(StorageConfigError):
            blob_store_from_url(bad)


def test_an_unreachable_s3_store_says_so_with_its_own_error() -> None:
    """Nothing listens on the endpoint: every call fails fast with StorageUnavailableError
    (what the web app answers 503 to), not with a botocore exception or a "not found"."""
    from atelier.store.errors import StorageUnavailableError

    store = S3BlobStore(
        "atelier-gone",
        "site",
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        region="us-east-1",
        **S3_CREDENTIALS,
    )
    calls = {
        "put": lambda: store.put("uploads/a.jpg", b"data", content_type="image/jpeg"),
        "read": lambda: store.read("uploads/a.jpg"),
        "exists": lambda: store.exists("uploads/a.jpg"),
        "delete": lambda: store.delete("uploads/a.jpg"),
        "list": lambda: list(store.list("uploads/")),
    }
    for call in calls.values():
        with pytest.raises(StorageUnavailableError, match="cannot reach the storage"):
            call()
    # Fast because of how the client is set up (a few retries, a 5 s connect timeout each), not
    # boto3's default minute-long connect timeout per attempt: the settings, not a stopwatch.
    config = store.client.meta.config
    assert config.connect_timeout == 5 and config.retries == {"mode": "standard", "total_max_attempts": 6}
    store.close()


def test_a_local_store_without_room_refuses_with_storage_full_and_keeps_nothing(tmp_path: Path) -> None:
    from atelier.store.errors import StorageFullError, StorageUnavailableError

    roomy = LocalBlobStore(tmp_path / "roomy")
    roomy.probe()  # room: no error
    # Keeping more free than the disk has: every write is refused before a byte is written.
    store = LocalBlobStore(tmp_path / "full", min_free_bytes=roomy.free_bytes() + 2**40)
    with pytest.raises(StorageFullError, match="full") as caught:
        store.put("uploads/2026/11/a.jpg", b"x" * 100, content_type="image/jpeg")
    assert isinstance(caught.value, StorageUnavailableError)  # an outage, answered 503
    assert not store.exists("uploads/2026/11/a.jpg") and list(store.list()) == []
    with pytest.raises(StorageFullError):
        store.probe()
