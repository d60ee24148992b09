"""One settings object for the whole product, read from ``ATELIER_*`` environment variables
and, when ``ATELIER_ENV_FILE`` names one, a ``.env`` file (the environment wins over the file).

Every field carries a description: ``atelier settings`` prints the effective values (secrets
masked) with the source of each, and a test checks that each one is documented in the README.
Fields that hold a secret say so (``json_schema_extra={"secret": True}``), so that nothing that
shows settings can forget one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


#: Marks a field whose value is a secret: shown masked by ``atelier settings``.
SECRET: dict[str, object] = {"secret": True}

#: The variable that names a ``.env`` file to read settings from (besides the environment).
ENV_FILE_VARIABLE = "ATELIER_ENV_FILE"


class SettingsError(ValueError):
    """The settings cannot be used: ATELIER_ENV_FILE names a file that cannot be read, or a
    value is not valid. The message is one line that names the variable."""


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "atelier"


class Settings(BaseSettings):
    """Atelier's settings. Each field is read from ``ATELIER_<FIELD NAME IN CAPITALS>``."""

    model_config = SettingsConfigDict(env_prefix="ATELIER_", extra="ignore", validate_default=True)

    data_dir: Path = Field(
        default_factory=_default_data_dir,
        description="Folder for everything Atelier keeps on this machine (database, images, "
        "outbox, models unless ATELIER_MODELS_DIR says otherwise). Default: "
        "$XDG_DATA_HOME/atelier or ~/.local/share/atelier.",
    )
    models_dir: Path | None = Field(
        default=None,
        description="Folder of model weights laid out as <family>/<official file name>. "
        "Default: <data dir>/models. `atelier models download` fills it.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto",
        description="Where the engines run: auto (CUDA when a GPU is usable, else CPU), cpu or cuda.",
    )
    precision: Literal["auto", "fp32", "fp16", "bf16"] = Field(
        default="auto",
        description="Number format of the instant engines on a CUDA GPU (autocast): auto (fp16 for "
        "AdaIN and MicroAST, fp32 for the filters), fp32, fp16 or bf16. The CPU always paints in fp32.",
    )
    max_image_pixels: int = Field(
        default=40_000_000,
        gt=0,
        description="Largest image accepted, in pixels (width x height), checked from the file "
        "header before decoding so that decompression bombs are refused cheaply.",
    )
    max_upload_bytes: int = Field(
        default=30 * 1024 * 1024,
        gt=0,
        description="Largest image file accepted, in bytes.",
    )
    decode_memory_mb: int = Field(
        default=1024,
        ge=1,
        description="Memory, in MiB, that decoding users' pictures may take at once in one "
        "process (estimated from each file's header: about 9 bytes a pixel for an RGB picture). "
        "A decode waits for room (ATELIER_DECODE_WAIT_SECONDS), then is refused with 503 and "
        "Retry-After; a picture bigger than the budget alone is decoded when nothing else is. "
        "Bounds what many small files declaring huge sizes can cost, which the pixel limit "
        "alone does not.",
    )
    decode_wait_seconds: float = Field(
        default=10.0,
        ge=0,
        description="Seconds a picture waits for room in the decoding budget before the "
        "request is refused with 503 (a painting job is handed back and tried again).",
    )
    threads: int = Field(
        default=0,
        ge=0,
        description="CPU threads for the engines; 0 lets PyTorch choose (one per core).",
    )


    # --- store -------------------------------------------------------------------------------
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the database. Default: an SQLite file atelier.db in the "
        "data dir. For scale: postgresql+psycopg://user:pass@host/dbname.",
    )
    storage_url: str | None = Field(
        default=None,
        description="Where images are kept: file:///path/to/folder (default: <data dir>/blobs) "
        "or s3://bucket/prefix for any S3-compatible store (see the ATELIER_S3_* settings).",
    )
    s3_endpoint_url: str | None = Field(
        default=None,
        description="Endpoint of the S3-compatible store (MinIO, R2, ...); unset for AWS S3.",
    )
    s3_region: str | None = Field(default=None, description="Region of the S3 bucket, e.g. eu-west-1.")
    s3_access_key_id: str | None = Field(
        default=None,
        description="S3 access key id; unset to use boto3's usual chain (environment, profile, role).",
    )
    s3_secret_access_key: str | None = Field(
        default=None,
        json_schema_extra=SECRET,
        description="S3 secret access key, paired with ATELIER_S3_ACCESS_KEY_ID.",
    )
    storage_min_free_mb: int = Field(
        default=64,
        ge=0,
        description="Free space, in MiB, the local blob store keeps on its disk (for the "
        "database, logs and the system). Below it the store counts as full: uploads answer 503 "
        "with Retry-After, /readyz says so, and painting jobs wait (their attempts are not "
        "spent) until there is room. A write that fails for lack of space is treated the same. "
        "Not used with S3.",
    )
    lease_seconds: int = Field(
        default=60,
        gt=0,
        description="How long a worker's claim on a job lasts without a heartbeat. A worker that "
        "dies is replaced after this long; the heartbeat renews it every third of it.",
    )
    temp_retention_hours: float = Field(
        default=24.0,
        gt=0,
        description="How long temporary blobs (instant uploads, unclaimed presigned uploads) are "
        "kept before `atelier reconcile --fix` deletes them.",
    )

    # --- video -------------------------------------------------------------------------------
    video_max_seconds: float = Field(
        default=120.0,
        gt=0,
        description="Longest stretch of a clip that is painted, in seconds (--max-seconds can cut "
        "a longer clip down to it).",
    )
    video_max_frames: int = Field(
        default=3600, gt=0, description="Most frames painted from one clip, after --fps resampling."
    )
    video_max_pixels: int = Field(
        default=3840 * 2160,
        gt=0,
        description="Largest video frame accepted (width x height), checked from the header and "
        "again on every decoded frame.",
    )
    video_temporal: bool = Field(
        default=True,
        description="Keep painted clips steady with optical-flow blending of consecutive frames "
        "(--temporal/--no-temporal overrides it per render).",
    )
    video_chunk_seconds: float = Field(
        default=20.0,
        ge=0,
        description="A clip sent to the server that is longer than 1.5 times this many seconds is "
        "cut into parts of about this length, painted by as many workers at once and joined "
        "(0: every clip is one job).",
    )
    video_chunk_lead_frames: int = Field(
        default=8,
        ge=0,
        description="Frames before a part's first one that its worker paints too (and does not "
        "keep), so that the optical-flow blending carries across the join.",
    )

    # --- service -----------------------------------------------------------------------------
    host: str = Field(
        default="127.0.0.1",
        description="Address `atelier serve` listens on (0.0.0.0 for every interface). "
        "`--host` overrides it.",
    )
    port: int = Field(
        default=8000, ge=0, le=65535, description="Port `atelier serve` listens on; `--port` overrides it."
    )
    public_url: str | None = Field(
        default=None,
        description="The address users reach the web app at, e.g. https://atelier.example.com: "
        "mailed links and local storage links start with it. Default: http://<host>:<port> of "
        "`atelier serve` (localhost when it listens on every interface).",
    )
    workers: int = Field(
        default=1,
        ge=0,
        description="Job workers (threads) that `atelier serve` runs inside the server to paint "
        "commissions and videos; 0 runs none there, for a setup with `atelier worker` processes "
        "on other machines. `--workers` overrides it.",
    )
    secret_key: str | None = Field(
        default=None,
        json_schema_extra=SECRET,
        description="Secret that signs links to locally stored images and the operator's "
        "session. Default: a random key made at first start and kept in <data dir>/secret.key. "
        "Every web process behind one load balancer needs the same one.",
    )
    styles_dir: Path | None = Field(
        default=None,
        description="Folder of the hand-picked style catalog (one TOML file and its painting per "
        "style). Default: <data dir>/styles. The shipped styles' paintings arrive there with "
        "`atelier styles download`; `atelier styles add IMAGE` adds your own.",
    )
    catalog_sync: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="Keep the style catalog (style.toml, painting, thumbnail) in the blob store so "
        "that every machine has the same: `atelier styles add` publishes there, and every server "
        "and worker process syncs its ATELIER_STYLES_DIR from it at start and whenever it changes "
        "(checked by sha256). auto: on when ATELIER_STORAGE_URL is s3://, off for a local folder.",
    )
    catalog_sync_seconds: float = Field(
        default=30.0,
        gt=0,
        description="How often a process looks for catalog changes in the blob store (one listing); "
        "a job for a style this machine lacks also looks at once.",
    )
    sync_models: bool = Field(
        default=False,
        description="Also mirror the model weights: `atelier models publish` puts ATELIER_MODELS_DIR in "
        "the blob store and each `atelier worker` and `atelier serve` fills its own from there at "
        "start (checked by sha256), so a new machine needs no weights by hand.",
    )
    smtp_url: str | None = Field(
        default=None,
        description="Mail server: smtp://[user:password@]host:port, or smtps://... for TLS from "
        "the first byte (port 465). Unset: mails are written to <data dir>/outbox as .eml files "
        "and their links logged.",
    )
    smtp_starttls: bool = Field(
        default=False,
        description="Upgrade smtp:// connections with STARTTLS before logging in (port 587); "
        "refuse to send if the server does not offer it.",
    )
    smtp_timeout: float = Field(
        default=30.0, gt=0, description="Seconds to wait for the mail server before a send is retried later."
    )
    mail_from: str = Field(
        default="Atelier <atelier@localhost>",
        description="Sender of every mail, e.g. 'Atelier <hello@example.com>'.",
    )
    mail_max_attempts: int = Field(
        default=10,
        ge=1,
        description="Sends of one mail before it is given up (kept in the outbox table as dead, "
        "shown in /admin); retries back off from 30 s to an hour.",
    )
    mail_retry_seconds: float = Field(
        default=30.0,
        gt=0,
        description="Wait before the first retry of a mail the server could not take (SMTP down); "
        "each further retry waits twice as long, at most an hour.",
    )
    preview_max_size: int = Field(
        default=384,
        ge=32,
        description="Longest side, in pixels, of a commission's watermarked preview. A recipe "
        "painted larger is scaled down to it, every pass's size and iterations by the same "
        "factor, so that a laptop demo finishes in a minute or so (a few at 2 busy cores).",
    )
    hd_from_preview: bool = Field(
        default=True,
        description="Paint a commission's HD picture on from its preview's painting: the "
        "preview's passes are the HD's first passes, and only one pass at twice the preview's "
        "size (at most the recipe's own size) is painted for the HD. The buyer gets the picture "
        "they chose, at twice the size, in a fraction of the time. False: the HD job paints the "
        "style's whole recipe again from the photo (the way before issue 14).",
    )
    hd_ahead: bool = Field(
        default=True,
        description="Paint a commission's HD picture ahead of payment while the workers have "
        "nothing else to do (the lowest priority; it hands its job back to the queue as soon as "
        "any other job waits). Paying then finds it painted and only sends the download mail. "
        "Nothing is mailed before payment.",
    )
    hd_ahead_hours: float = Field(
        default=24.0,
        gt=0,
        description="How long after its preview an unpaid commission's HD picture may still be "
        "painted ahead; later, it is painted when the buyer pays.",
    )
    quality_max_style_distance: float = Field(
        default=0.5,
        gt=0,
        description="A commission painting whose style distance (1 = the untouched photo, 0 = the "
        "painting's statistics; see atelier bench quality) is above this did not converge: it is "
        "painted again from another start, and not delivered if it fails again (the job fails "
        "with the reason, shown in /admin).",
    )
    quality_min_style_fall: float = Field(
        default=0.6,
        ge=0,
        le=1,
        description="The share of its starting style loss that a commission's first pass must "
        "remove; less is a stalled optimisation, painted again from another start like a "
        "painting too far from the style.",
    )
    admin_token: str | None = Field(
        default=None,
        json_schema_extra=SECRET,
        description="Password of the operator view at /admin (queue, artworks, workers, "
        "failures). Unset: /admin does not exist. Use 32+ random characters.",
    )
    instant_max_size: int = Field(
        default=1024,
        ge=64,
        description="Largest longest side, in pixels, the instant API paints (the `size` of "
        "/api/v1/stylize is capped to it; bigger photos are scaled down).",
    )
    instant_batch_window_ms: float = Field(
        default=15.0,
        ge=0,
        description="How long the instant API waits for other requests to paint together with "
        "the first (micro-batching), in milliseconds; 0 paints each request alone.",
    )
    instant_batch_max: int = Field(
        default=8,
        ge=1,
        description="Most requests painted together in one batch by the instant API.",
    )
    instant_batch_max_pixels: int = Field(
        default=1024 * 1024,
        ge=0,
        description="Most pixels (width x height, summed) painted together in one instant batch; "
        "past about a megapixel a CPU batch runs slower per image. 0: no pixel limit.",
    )
    instant_cache_mb: int = Field(
        default=512,
        ge=0,
        description="Memory, in MiB, for the instant API's cache of photos and their encoded "
        "features (re-picking a style for a cached photo costs only the decoder).",
    )
    style_cache_size: int = Field(
        default=256,
        ge=0,
        description="Encoded styles (a few KiB each) the instant API keeps, by style name or "
        "by the hash of an uploaded painting.",
    )
    batch_max_photos: int = Field(
        default=16, ge=1, description="Most photos one call of POST /api/v1/batches may send or name."
    )
    batch_max_styles: int = Field(
        default=8, ge=1, description="Most styles (names, uploads or paintings) one batch may ask for."
    )
    batch_max_pairs: int = Field(
        default=64,
        ge=1,
        description="Most pictures one batch paints (photos x styles); each one also counts against "
        "ATELIER_RATE_LIMIT_PAINTINGS_PER_IP.",
    )
    batch_inline_pairs: int = Field(
        default=4,
        ge=0,
        description="A batch of at most this many pictures is painted during the request and answered "
        "inline (base64 in the JSON); a bigger one is a queued job to follow. 0: always a job.",
    )
    batch_max_bytes: int = Field(
        default=64 * 1024 * 1024,
        gt=0,
        description="Largest request body POST /api/v1/batches accepts, every file together, in "
        "bytes (each image is also held to ATELIER_MAX_UPLOAD_BYTES).",
    )
    max_video_bytes: int = Field(
        default=200 * 1024 * 1024,
        gt=0,
        description="Largest video file accepted by POST /api/v1/videos, in bytes.",
    )

    # --- abuse: proxies, captcha, rate limits -----------------------------------------------
    trusted_proxies: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Comma-separated addresses or networks (CIDR, e.g. 10.0.0.0/8) of the reverse "
        "proxies in front of the app. Only a request from one of them has its X-Forwarded-For "
        "believed (the right-most address that is not a trusted proxy is the client). Empty: the "
        "client is the connection's peer, whatever headers it sends.",
    )
    captcha_provider: Literal["none", "turnstile", "recaptcha", "hcaptcha"] = Field(
        default="none",
        description="Bot check on uploads and commissions: none (off), turnstile (Cloudflare), "
        "recaptcha (Google reCAPTCHA v2/v3) or hcaptcha. Verified server-side; when the "
        "provider cannot be reached the request is refused (fails closed).",
    )
    captcha_site_key: str | None = Field(
        default=None, description="The captcha provider's public site key (shown in the page's widget)."
    )
    captcha_secret: str | None = Field(
        default=None,
        json_schema_extra=SECRET,
        description="The captcha provider's secret key, sent with each verification.",
    )
    captcha_verify_url: str | None = Field(
        default=None,
        description="Verification endpoint. Unset: the provider's official one "
        "(challenges.cloudflare.com, www.google.com/recaptcha, api.hcaptcha.com); for tests.",
    )
    captcha_timeout: float = Field(
        default=5.0, gt=0, description="Seconds to wait for the captcha provider before refusing."
    )
    captcha_pass_minutes: float = Field(
        default=30.0,
        ge=0,
        description="How long a solved challenge lets the same browser upload again without a "
        "new one (a signed cookie); 0 asks every time.",
    )
    rate_limit_window_seconds: int = Field(
        default=3600, gt=0, description="Length of the rate limits' fixed window, in seconds."
    )
    rate_limit_uploads_per_ip: int = Field(
        default=600,
        ge=0,
        description="Requests that send a file (uploads, stylize with a photo, videos, the "
        "pages' forms) one client address may make per window; 0 for no limit. Counted in "
        "the database, so every web process shares the count.",
    )
    rate_limit_paintings_per_ip: int = Field(
        default=3000,
        ge=0,
        description="Pictures one client address may have the instant API paint from an uploaded "
        "photo (GET /api/v1/stylize, what the instant page asks for on every style it shows; "
        "GET /api/v1/sheet counts as one) per window; 0 for no limit.",
    )
    rate_limit_commissions_per_ip: int = Field(
        default=30, ge=0, description="Commissions one client address may order per window; 0 for no limit."
    )
    rate_limit_commissions_per_email: int = Field(
        default=10, ge=0, description="Commissions one email address may order per window; 0 for no limit."
    )
    rate_limit_admin_logins_per_ip: int = Field(
        default=10, ge=0, description="Sign-in attempts at /admin one client address may make per window; 0 for no limit."
    )

    # --- sales: pricing ---------------------------------------------------------------------
    trusted_country_headers: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Comma-separated request headers that carry the buyer's country and that "
        "your proxy sets itself (CloudFront-Viewer-Country, CF-IPCountry). Empty: none is "
        "trusted, because a client can send any header; only list one your proxy overwrites.",
    )
    geoip_database: Path | None = Field(
        default=None,
        description="A MaxMind GeoLite2/GeoIP2 Country .mmdb file, used to find the buyer's "
        "country from their address when no trusted header says it. Unset: the region of the "
        "browser's Accept-Language is used instead.",
    )
    price_table: Path | None = Field(
        default=None,
        description="TOML file of prices: country -> currency, currency -> suggested and minimum "
        "price in minor units (cents), same layout as the shipped atelier/service/prices.toml. "
        "Unset: the shipped table.",
    )

    # --- sales: payments --------------------------------------------------------------------
    stripe_secret_key: str | None = Field(
        default=None,
        json_schema_extra=SECRET,
        description="Stripe secret API key (sk_live_... or sk_test_...). Set: buyers pay through "
        "a Stripe Checkout Session. Unset: a local demo provider, clearly labelled, where no "
        "money moves, so the whole flow works on a laptop.",
    )
    stripe_webhook_secret: str | None = Field(
        default=None,
        json_schema_extra=SECRET,
        description="Signing secret (whsec_...) of the Stripe webhook endpoint "
        "/api/v1/payments/stripe/webhook; every event is checked against it (signature and a "
        "5-minute timestamp tolerance). Unset: the webhook refuses every event.",
    )
    stripe_api_base: str | None = Field(
        default=None,
        description="Base URL of the Stripe API. Unset: Stripe's own (https://api.stripe.com). "
        "For Stripe's mock server or a test double on loopback.",
    )
    download_ttl_hours: float = Field(
        default=72.0,
        gt=0,
        description="How long a mailed HD download link (/d/{token}) works, in hours from the "
        "moment it is mailed.",
    )
    download_max_count: int = Field(
        default=5,
        ge=1,
        description="How many times an HD download link can be used before it is refused.",
    )

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_proxies(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(item.strip() for item in value.split(",") if item.strip())
        return value

    @field_validator("trusted_country_headers", mode="before")
    @classmethod
    def _split_header_names(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(name.strip() for name in value.split(",") if name.strip())
        return value

    @model_validator(mode="after")
    def _derive_dirs(self) -> Settings:
        self.data_dir = self.data_dir.expanduser()
        if self.models_dir is None:
            self.models_dir = self.data_dir / "models"
        else:
            self.models_dir = self.models_dir.expanduser()
        if self.database_url is None:
            self.database_url = f"sqlite:///{self.data_dir / 'atelier.db'}"
        if self.storage_url is None:
            self.storage_url = (self.data_dir / "blobs").as_uri()
        self.styles_dir = (self.styles_dir or self.data_dir / "styles").expanduser()
        return self

    @property
    def models_path(self) -> Path:
        """The models folder, always set after validation."""
        assert self.models_dir is not None
        return self.models_dir

    @property
    def styles_path(self) -> Path:
        """The style catalog folder, always set after validation."""
        assert self.styles_dir is not None
        return self.styles_dir


def env_file_of(environ: Mapping[str, str] | None = None) -> Path | None:
    """The ``.env`` file that ATELIER_ENV_FILE names, or None when it is unset or empty."""
    value = (os.environ if environ is None else environ).get(ENV_FILE_VARIABLE, "").strip()
    return Path(value).expanduser() if value else None


def load_settings(env_file: Path | None = None) -> Settings:
    """Settings from the environment and ``env_file`` (default: the file ATELIER_ENV_FILE names).

    A variable set in the environment wins over the same one in the file, so a staging host can
    keep one shared file and override a value per process. A file that is named but missing is
    refused: pydantic-settings would silently skip it, and a production host would then run on
    the laptop defaults (SQLite in the home folder, mail to a folder).
    """
    path = env_file if env_file is not None else env_file_of()
    if path is not None:
        if not path.is_file():
            raise SettingsError(f"{ENV_FILE_VARIABLE}={path}: no such file")
        try:
            path.read_bytes()
        except OSError as exc:
            raise SettingsError(f"{ENV_FILE_VARIABLE}={path}: cannot read it ({exc.strerror or exc})") from None
    try:
        return Settings(_env_file=path, _env_file_encoding="utf-8")  # type: ignore[call-arg]
    except ValidationError as exc:
        raise SettingsError(_one_line(exc, path)) from exc


def _one_line(exc: ValidationError, env_file: Path | None) -> str:
    problems = []
    for error in exc.errors():
        variable = "ATELIER_" + "_".join(str(part) for part in error.get("loc", ())).upper()
        problems.append(f"{variable}: {error.get('msg', 'not valid')}")
    where = f" (environment or {env_file})" if env_file else ""
    return "settings not valid" + where + ": " + "; ".join(problems)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment and the ATELIER_ENV_FILE file."""
    return load_settings()
