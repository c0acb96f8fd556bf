"""All configuration in one pydantic-settings class.

Values come from the environment and `.env`; secrets may come from files (`BOT_TOKEN_FILE`,
`POSTGRES_PASSWORD_FILE`, `LLM_API_KEY_FILE`, `WEBHOOK_SECRET_FILE`) or from Docker/Compose
secrets under
`/run/secrets/<name>`. A bad value stops start-up with one line naming the variable (see
`load_settings`), and secrets are `SecretStr` so they never show in reprs, logs or errors.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from cache.client import parse_redis_url
from db.types import Lang

SECRETS_DIR = Path("/run/secrets")
#: What Telegram issues: the bot's numeric id, a colon, a secret of URL-safe characters.
_TOKEN_RE = re.compile(r"[0-9]{1,20}:[A-Za-z0-9_-]{8,100}")
TELEGRAM_API_DEFAULT = "https://api.telegram.org"
#: What Telegram accepts as a webhook's ``secret_token`` (setWebhook): 1-256 of these.
_WEBHOOK_SECRET_RE = re.compile(r"[A-Za-z0-9_-]{1,256}")
#: The ports Telegram delivers webhooks to (a local Bot API server accepts any).
TELEGRAM_WEBHOOK_PORTS = frozenset({443, 80, 88, 8443})
#: Telegram's broadcast limit without paid broadcasts, and with them (Bot API 7.11).
FREE_BROADCAST_RATE = 30.0
PAID_BROADCAST_RATE = 1000.0


class ConfigError(Exception):
    """A configuration problem, phrased as one line for the operator."""


def _read_secret_file(path: str | os.PathLike[str], variable: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"{variable}: cannot read {path}: {exc.strerror}") from None


def _check_url(value: str, schemes: tuple[str, ...], what: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in schemes or (not parts.hostname and not parts.path):
        raise ValueError(f"not a {what} URL (expected {' or '.join(schemes)}://...)")
    try:
        _ = parts.port
    except ValueError:
        raise ValueError(f"not a {what} URL: bad port") from None
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        hide_input_in_errors=True,
    )

    # Telegram
    bot_token: SecretStr | None = None
    bot_token_file: Path | None = None
    telegram_api_url: str = TELEGRAM_API_DEFAULT
    admin_ids: Annotated[frozenset[int], NoDecode] = frozenset()
    #: set: Telegram delivers updates to this URL (webhook mode); unset: long polling
    webhook_url: str | None = None
    webhook_secret: SecretStr | None = None
    webhook_secret_file: Path | None = None
    #: where the webhook server listens (behind the load balancer that terminates TLS)
    webhook_listen: str = "127.0.0.1:8081"
    webhook_max_connections: int = Field(40, ge=1, le=100)
    #: in-progress lease of an update (extended while it is handled): how long a redelivery
    #: waits before another instance takes over the update of an instance that died
    webhook_lease_seconds: float = Field(10.0, ge=1, le=300)
    #: how long a handled update_id is remembered, so a redelivery is answered without
    #: handling it again
    webhook_dedupe_ttl: int = Field(3600, ge=60, le=7 * 86_400)

    # Stores
    # repr=False: a password may be embedded in either URL
    database_url: str | None = Field(None, repr=False)
    postgres_password: SecretStr | None = None
    postgres_password_file: Path | None = None
    redis_url: str | None = Field(None, repr=False)
    db_pool_size: int = Field(5, ge=1, le=100)
    db_max_overflow: int = Field(10, ge=0, le=200)
    db_pool_recycle: int = Field(3600, ge=30)
    db_pool_timeout: float = Field(2.0, gt=0, description="seconds to wait for a free connection")
    db_connect_timeout: float = Field(2.0, gt=0, description="seconds to open a connection")
    db_command_timeout: float = Field(3.0, gt=0, description="client-side limit of any command")
    db_statement_timeout: float = Field(
        2.5, gt=0, description="server-side statement_timeout (a little under the command's)"
    )
    db_bulkhead: int = Field(
        32, ge=1, description="connections held or awaited for updates at once (the rest wait)"
    )
    db_bulkhead_wait: float = Field(
        0.25, ge=0, description="seconds an update waits for a bulkhead slot, then try again"
    )
    #: DATABASE_URL points at PgBouncer in transaction pooling: no prepared-statement caches,
    #: unique statement names, migrations in one transaction (db/engine.py, db/migrate.py)
    db_pgbouncer: bool = False
    redis_socket_timeout: float = Field(0.25, gt=0, le=5)
    redis_max_connections: int = Field(50, ge=2)
    cache_prefix: str = Field("horo", pattern=r"^[A-Za-z0-9_-]{1,32}$")
    cache_schema_version: str = Field("v1", pattern=r"^v[0-9]{1,4}$")
    cache_enabled: bool = True
    data_dir: Path = Path(".data")

    # Product
    bot_timezone: str = "Europe/Moscow"
    default_lang: Lang = Lang.RU
    enabled_langs: Annotated[tuple[Lang, ...], NoDecode] = (Lang.RU, Lang.EN)
    throttle_enabled: bool = True
    throttle_rate: float = Field(
        0.5, gt=0, description="seconds per update of a user once the burst is spent"
    )
    throttle_burst: int = Field(3, ge=1, description="updates a user may send at once")

    # Horoscope generation
    horoscope_generator: Literal["template", "openai"] = "template"
    llm_base_url: str = "https://api.openai.com/v1"
    llm_api_key: SecretStr | None = None
    llm_api_key_file: Path | None = None
    llm_model: str = "gpt-4o-mini"
    llm_timeout: float = Field(20.0, gt=0)
    horoscope_deadline: float = Field(
        4.0, gt=0, description="seconds a person waits for a generation; then the built-in text"
    )

    # Jobs (times of day in BOT_TIMEZONE, HH:MM)
    precompute_times: Annotated[tuple[dt.time, ...], NoDecode] = (dt.time(0, 5), dt.time(20, 0))
    flush_views_seconds: int = Field(30, ge=1)
    flush_last_seen_seconds: int = Field(60, ge=1)
    invalidation_replay_seconds: int = Field(
        10, ge=1, description="how often cache invalidations Redis missed are retried"
    )
    #: global send rate of the daily push, across all instances (enforced in Redis)
    push_rate_per_second: float = Field(25.0, ge=1, le=PAID_BROADCAST_RATE)
    #: Bot API 7.11 paid broadcasts (0.1 Star per message): rates above 30/s, up to 1000/s
    push_paid_broadcast: bool = False
    #: how long a claimed batch of push users stays this instance's (extended while it works)
    push_claim_seconds: float = Field(120.0, ge=1, le=3600)
    #: how often each instance looks for due users (60: every minute at second 5)
    push_sweep_seconds: int = Field(60, ge=1, le=3600)
    #: users per claim (0: about four seconds' worth at PUSH_RATE_PER_SECOND, 10..500)
    push_batch_size: int = Field(0, ge=0, le=5000)
    scheduler_enabled: bool = True
    max_concurrent_updates: int = Field(
        64, ge=2, le=10_000, description="updates handled at once (back-pressure beyond)"
    )
    shutdown_timeout: float = Field(
        15.0, ge=5, description="seconds from SIGTERM to exit, whatever Postgres does"
    )

    # Operations
    log_format: Literal["json", "console"] = "json"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    metrics_addr: str = "127.0.0.1:9101"
    run_migrations: bool = True
    playground_addr: str = "127.0.0.1:8080"
    #: run on uvloop when it is installed (bot/ops/runtime.py); false: asyncio's own loop
    uvloop: bool = True

    # -- validators -------------------------------------------------------------------------

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("bot_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            msg = f"unknown time zone {value!r} (use an IANA name like Europe/Moscow)"
            raise ValueError(msg) from None
        return value

    @field_validator("admin_ids", mode="before")
    @classmethod
    def _parse_admin_ids(cls, value: Any) -> Any:
        if isinstance(value, str):
            items = [item.strip() for item in value.replace(";", ",").split(",") if item.strip()]
            bad = [item for item in items if not item.lstrip("-").isdigit()]
            if bad:
                raise ValueError(f"not a numeric Telegram id: {bad[0]!r}")
            return frozenset(int(item) for item in items)
        return value

    @field_validator("enabled_langs", mode="before")
    @classmethod
    def _parse_langs(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(item.strip().lower() for item in value.split(",") if item.strip())
        return value

    @field_validator("precompute_times", mode="before")
    @classmethod
    def _parse_times(cls, value: Any) -> Any:
        if isinstance(value, str):
            out = []
            for item in value.split(","):
                try:
                    out.append(dt.time.fromisoformat(item.strip()))
                except ValueError:
                    raise ValueError(f"not a time of day HH:MM: {item.strip()!r}") from None
            return tuple(out)
        return value

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        value = _check_url(value, ("postgresql", "postgresql+asyncpg", "postgres"), "PostgreSQL")
        # One driver everywhere: asyncpg.
        for plain in ("postgresql://", "postgres://"):
            if value.startswith(plain):
                value = "postgresql+asyncpg://" + value[len(plain) :]
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        """One server (redis://, rediss://, unix://), Sentinel (redis+sentinel://h:26379,
        h2:26379/mymaster/0) or a Cluster (redis-cluster://h:6379,h2:6379); forms and options
        in cache/client.py, what each promises in docs/redis-ha.md."""
        if value is None or value == "":
            return None
        parse_redis_url(value)  # ValueError with a one-line reason for a bad URL
        return value

    @field_validator("webhook_url")
    @classmethod
    def _check_webhook_url(cls, value: str | None) -> str | None:
        if value is None or value.strip() == "":
            return None
        value = _check_url(value.strip(), ("http", "https"), "HTTP")
        if not urlsplit(value).hostname:
            raise ValueError("no host name (the public https URL Telegram posts updates to)")
        return value

    @field_validator("telegram_api_url", "llm_base_url")
    @classmethod
    def _check_http_url(cls, value: str) -> str:
        return _check_url(value, ("http", "https"), "HTTP").rstrip("/")

    @field_validator("metrics_addr", "playground_addr", "webhook_listen")
    @classmethod
    def _check_addr(cls, value: str) -> str:
        if value == "":
            return value
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"not host:port: {value!r}")
        return value

    @model_validator(mode="after")
    def _bulkhead_below_update_limit(self) -> Settings:
        if self.db_bulkhead >= self.max_concurrent_updates:
            raise ValueError(
                "DB_BULKHEAD must be below MAX_CONCURRENT_UPDATES (updates stuck on Postgres"
                " must never hold every update slot)"
            )
        return self

    @model_validator(mode="after")
    def _secrets_from_files(self) -> Settings:
        """`*_FILE` wins over /run/secrets/<name>; an explicit value wins over both."""
        for field, file_field, secret_name in (
            ("bot_token", "bot_token_file", "telegram_bot_token"),
            ("postgres_password", "postgres_password_file", "postgres_password"),
            ("llm_api_key", "llm_api_key_file", "llm_api_key"),
            ("webhook_secret", "webhook_secret_file", "webhook_secret"),
        ):
            if getattr(self, field) is not None:
                continue
            path = getattr(self, file_field)
            if path is None and (SECRETS_DIR / secret_name).is_file():
                path = SECRETS_DIR / secret_name
            if path is not None:
                secret = _read_secret_file(path, file_field.upper())
                object.__setattr__(self, field, SecretStr(secret) if secret else None)
        token = self.bot_token.get_secret_value().strip() if self.bot_token else ""
        if not token:  # BOT_TOKEN= (compose's way to unset) or an empty secret file
            object.__setattr__(self, "bot_token", None)
        elif not _TOKEN_RE.fullmatch(token):
            raise ValueError("BOT_TOKEN: does not look like a bot token (<digits>:<secret>)")
        self._check_webhook()
        self._check_push_rate()
        return self

    def _check_webhook(self) -> None:
        """Webhook mode needs a secret Telegram can send (an unchecked webhook would let anyone
        who finds the URL feed the bot updates), and an address Telegram delivers to."""
        secret = self.webhook_secret.get_secret_value() if self.webhook_secret else ""
        if secret and not _WEBHOOK_SECRET_RE.fullmatch(secret):
            raise ValueError(
                "WEBHOOK_SECRET: 1-256 characters A-Z, a-z, 0-9, _ and - (what Telegram accepts)"
            )
        if self.webhook_url is None:
            return
        if not secret:
            raise ValueError(
                "WEBHOOK_SECRET: required when WEBHOOK_URL is set (or WEBHOOK_SECRET_FILE)"
            )
        if self.telegram_api_url == TELEGRAM_API_DEFAULT:
            parts = urlsplit(self.webhook_url)
            if parts.scheme != "https":
                raise ValueError("WEBHOOK_URL: Telegram delivers webhooks over HTTPS only")
            if (parts.port or 443) not in TELEGRAM_WEBHOOK_PORTS:
                raise ValueError("WEBHOOK_URL: Telegram delivers only to ports 443, 80, 88, 8443")

    def _check_push_rate(self) -> None:
        if self.push_rate_per_second > FREE_BROADCAST_RATE and not self.push_paid_broadcast:
            raise ValueError(
                "PUSH_RATE_PER_SECOND: above 30/s Telegram needs paid broadcasts"
                " (PUSH_PAID_BROADCAST=true, up to 1000/s)"
            )

    # -- derived ----------------------------------------------------------------------------

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.bot_timezone)

    @property
    def webhook_path(self) -> str:
        """The path the webhook server answers on: WEBHOOK_URL's (``/`` when it has none)."""
        if self.webhook_url is None:
            return "/"
        return urlsplit(self.webhook_url).path or "/"

    @property
    def bot_id(self) -> int | None:
        if self.bot_token is None:
            return None
        return int(self.bot_token.get_secret_value().split(":", 1)[0])

    def database_url_with_password(self) -> str | None:
        """DATABASE_URL with POSTGRES_PASSWORD(_FILE) filled in when the URL carries none."""
        if self.database_url is None or self.postgres_password is None:
            return self.database_url
        parts = urlsplit(self.database_url)
        if parts.password or not parts.username:
            return self.database_url
        from urllib.parse import quote

        netloc = (
            f"{parts.username}:{quote(self.postgres_password.get_secret_value(), safe='')}"
            f"@{parts.hostname}{':' + str(parts.port) if parts.port else ''}"
        )
        return parts._replace(netloc=netloc).geturl()


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    loc = ".".join(str(part) for part in first.get("loc", ()))
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    return f"{loc.upper()}: {message}" if loc else message


def load_settings(**overrides: Any) -> Settings:
    """Build Settings, turning a validation error into one ConfigError line."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(f"configuration error: {_describe(exc)}") from None
