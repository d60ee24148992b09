"""moto's S3 server, with the checks moto leaves out, done the way AWS documents them.

moto (5.2) stores whatever a browser POSTs to a bucket, whatever the policy says, and serves
presigned links after they expire. Real S3 and MinIO refuse both. So the tests run moto behind
this small WSGI layer, which is an independent reading of AWS's documentation (it shares no code
with atelier.store.blobs):

- POST uploads (https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-HTTPPOSTConstructPolicy.html):
  the signature is SigV4 over the base64 policy; the policy must not have expired; each condition
  (exact match, ["eq", ...], ["starts-with", ...], ["content-length-range", lo, hi]) must hold;
  and every form field must be covered by a condition (except policy, x-amz-signature, file and
  x-ignore-*).
- Presigned GETs: refused after X-Amz-Date + X-Amz-Expires.
- CORS (https://docs.aws.amazon.com/AmazonS3/latest/userguide/cors.html): moto answers the
  preflight from the bucket's rules but leaves Access-Control-Allow-Origin off the answer to a
  browser's POST upload, so a page could never read it; here every answer to a request whose
  Origin a rule of the bucket allows carries it, as S3's do.

Every request is also noted (:attr:`PolicyEnforcer.requests`: method, path, body length, Origin),
so a test can show what reached the bucket, and from where.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

from moto.moto_server import werkzeug_app
from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.formparser import parse_form_data
from werkzeug.serving import make_server


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()


def _error(start_response: Callable[..., Any], status: str, code: str, message: str) -> Iterable[bytes]:
    body = (
        f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
        f"<Message>{message}</Message></Error>"
    ).encode()
    start_response(status, [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))])
    return [body]


class PolicyEnforcer:
    def __init__(self, app: Any, secret_access_key: str) -> None:
        self.app = app
        self.secret = secret_access_key
        self.requests: list[tuple[str, str, int, str | None]] = []

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        origin = environ.get("HTTP_ORIGIN")
        self.requests.append(
            (environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""), int(environ.get("CONTENT_LENGTH") or 0), origin)
        )
        if origin and environ["REQUEST_METHOD"] != "OPTIONS":
            start_response = _with_cors(start_response, environ, origin)
        return self._serve(environ, start_response)

    def _serve(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        method = environ["REQUEST_METHOD"]
        if method == "POST" and environ.get("CONTENT_TYPE", "").startswith("multipart/form-data"):
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = environ["wsgi.input"].read(length)
            refusal = self._check_post(environ, body)
            if refusal is not None:
                return _error(start_response, *refusal)
            environ["wsgi.input"] = io.BytesIO(body)
        elif method in ("GET", "HEAD"):
            query = parse_qs(environ.get("QUERY_STRING", ""))
            if "X-Amz-Expires" in query and "X-Amz-Date" in query:
                signed = datetime.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
                if datetime.now(UTC) > signed + timedelta(seconds=int(query["X-Amz-Expires"][0])):
                    return _error(start_response, "403 Forbidden", "AccessDenied", "Request has expired")
        return self.app(environ, start_response)

    def _check_post(self, environ: dict[str, Any], body: bytes) -> tuple[str, str, str] | None:
        copy = dict(environ)
        copy["wsgi.input"] = io.BytesIO(body)
        _, form, files = parse_form_data(copy)
        fields = {name.lower(): value for name, value in form.items()}
        upload = files.get("file")
        size = len(upload.read()) if upload is not None else 0
        policy = fields.get("policy")
        if policy is None or "x-amz-signature" not in fields:
            return ("403 Forbidden", "AccessDenied", "Anonymous POST without a policy")
        # SigV4: the signing key is derived from the secret and the credential scope.
        _, date, region, service, _ = fields.get("x-amz-credential", "////").split("/")
        key = _hmac(_hmac(_hmac(_hmac(f"AWS4{self.secret}".encode(), date), region), service), "aws4_request")
        expected = hmac.new(key, policy.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, fields["x-amz-signature"]):
            return ("403 Forbidden", "SignatureDoesNotMatch", "The request signature does not match")
        document = json.loads(base64.b64decode(policy))
        expiration = datetime.fromisoformat(document["expiration"].replace("Z", "+00:00"))
        if datetime.now(UTC) > expiration:
            return ("403 Forbidden", "AccessDenied", "Invalid according to Policy: Policy expired.")
        bucket = environ["PATH_INFO"].strip("/").split("/")[0]
        values = dict(fields, bucket=bucket)
        covered = {"policy", "x-amz-signature", "file"}
        for condition in document["conditions"]:
            if isinstance(condition, dict):
                ((name, wanted),) = condition.items()
                op = "eq"
            elif condition[0] == "content-length-range":
                low, high = int(condition[1]), int(condition[2])
                if size > high:
                    return ("400 Bad Request", "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size")
                if size < low:
                    return ("400 Bad Request", "EntityTooSmall", "Your proposed upload is smaller than the minimum allowed size")
                continue
            else:
                op, name, wanted = condition[0], condition[1].lstrip("$"), condition[2]
            name = name.lower()
            covered.add(name)
            value = values.get(name)
            ok = value == wanted if op == "eq" else value is not None and value.startswith(wanted)
            if not ok:
                return (
                    "403 Forbidden",
                    "AccessDenied",
                    f"Invalid according to Policy: Policy Condition failed: {json.dumps(condition)}",
                )
        extra = [n for n in fields if n not in covered and not n.startswith("x-ignore-")]
        if extra:
            return ("403 Forbidden", "AccessDenied", f"Invalid according to Policy: Extra input fields: {extra}")
        return None


def _with_cors(start_response: Callable[..., Any], environ: dict[str, Any], origin: str) -> Callable[..., Any]:
    """``start_response`` adding Access-Control-Allow-Origin when a CORS rule of the bucket
    allows ``origin`` (and moto did not add it itself)."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends
    from moto.s3.utils import cors_matches_origin

    bucket_name = environ.get("PATH_INFO", "").strip("/").split("/")[0]
    try:
        rules = s3_backends[DEFAULT_ACCOUNT_ID]["global"].get_bucket(bucket_name).cors
    except Exception:  # noqa: BLE001 - no such bucket: no CORS headers
        rules = []
    allowed = any(
        rule.allowed_origins is not None and cors_matches_origin(origin, rule.allowed_origins)
        and environ["REQUEST_METHOD"] in (rule.allowed_methods or [])
        for rule in rules
    )

    def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        if allowed and not any(name.lower() == "access-control-allow-origin" for name, _ in headers):
            headers = [*headers, ("Access-Control-Allow-Origin", origin), ("Vary", "Origin")]
        return start_response(status, headers, exc_info) if exc_info is not None else start_response(status, headers)

    return start


class PolicyEnforcingMotoServer(ThreadedMotoServer):
    """ThreadedMotoServer, its app wrapped in :class:`PolicyEnforcer`."""

    def __init__(self, *, ip_address: str, port: int, secret_access_key: str) -> None:
        super().__init__(ip_address=ip_address, port=port, verbose=False)
        self._secret = secret_access_key
        self.enforcer: PolicyEnforcer | None = None

    @property
    def requests(self) -> list[tuple[str, str, int, str | None]]:
        """What reached the server: (method, path, body length, Origin) per request."""
        return self.enforcer.requests if self.enforcer is not None else []

    def _server_entry(self) -> None:
        # moto's server otherwise wraps every service in flask-cors, allowing any origin any
        # request: a bucket without CORS rules would take uploads from every page. S3 allows
        # only what the bucket's rules say (moto's own S3 code does that, and _with_cors).
        werkzeug_app.DISABLE_GLOBAL_CORS = True
        app = self.enforcer = PolicyEnforcer(DomainDispatcherApplication(create_backend_app), self._secret)
        self._server = make_server(
            self._ip_address, self._port, app, True, request_handler=MotoRequestHandler
        )
        self._server_ready_event.set()
        self._server.serve_forever()
