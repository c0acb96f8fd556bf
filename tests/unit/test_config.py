from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from bot.config import ConfigError, load_settings
from db.types import Lang

TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in (
        "BOT_TOKEN", "BOT_TOKEN_FILE", "DATABASE_URL", "REDIS_URL", "ADMIN_IDS", "BOT_TIMEZONE",
        "DEFAULT_LANG", "POSTGRES_PASSWORD", "POSTGRES_PASSWORD_FILE", "LOG_LEVEL",
        "DB_PGBOUNCER",
        "WEBHOOK_URL", "WEBHOOK_SECRET", "WEBHOOK_SECRET_FILE", "TELEGRAM_API_URL",
        "PUSH_RATE_PER_SECOND", "PUSH_PAID_BROADCAST",
    ):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_defaults() -> None:
    s = load_settings()
    assert s.bot_timezone == "Europe/Moscow"
    assert s.default_lang is Lang.RU
    assert s.cache_prefix == "horo"
    assert s.log_format == "json"
    assert s.metrics_addr == "127.0.0.1:9101"
    assert s.run_migrations is True
    assert s.telegram_api_url == "https://api.telegram.org"
    assert s.precompute_times == (dt.time(0, 5), dt.time(20, 0))


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("BOT_TIMEZONE", "Mars/Olympus", "BOT_TIMEZONE: unknown time zone 'Mars/Olympus'"),
        ("DATABASE_URL", "nonsense", "DATABASE_URL: not a PostgreSQL URL"),
        ("REDIS_URL", "http://x", "REDIS_URL: not a Redis URL"),
        ("REDIS_URL", "redis+sentinel://:pw@s1:26379/", "REDIS_URL: a sentinel URL ends in"),
        (
            "REDIS_URL",
            "redis-cluster://n1:7000/1",
            "REDIS_URL: a Redis Cluster has only database 0",
        ),
        ("DB_PGBOUNCER", "perhaps", "DB_PGBOUNCER:"),
        ("ADMIN_IDS", "1, two", "ADMIN_IDS: not a numeric Telegram id: 'two'"),
        ("TELEGRAM_API_URL", "ftp://x", "TELEGRAM_API_URL: not a HTTP URL"),
        ("METRICS_ADDR", "nohost", "METRICS_ADDR: not host:port"),
        ("DEFAULT_LANG", "de", "DEFAULT_LANG:"),
    ],
)
def test_bad_value_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


def test_cluster_redis_url_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    url = "redis-cluster://n1:7000,n2:7001"
    monkeypatch.setenv("REDIS_URL", url)
    assert load_settings().redis_url == url


def test_sentinel_redis_url_and_pgbouncer_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    url = "redis+sentinel://:pw@s1:26379,s2:26379/mymaster/0"
    monkeypatch.setenv("REDIS_URL", url)
    monkeypatch.setenv("DB_PGBOUNCER", "true")
    s = load_settings()
    assert s.redis_url == url
    assert s.db_pgbouncer is True
    assert load_settings(db_pgbouncer=False).db_pgbouncer is False


def test_malformed_redis_url_error_hides_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis+sentinel://:hunter2@s1:port/mymaster")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert str(info.value).startswith("configuration error: REDIS_URL: ")
    assert "hunter2" not in str(info.value)


def test_admin_ids_and_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADMIN_IDS", "1, 22;333")
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@h:5432/d")
    s = load_settings()
    assert s.admin_ids == frozenset({1, 22, 333})
    assert s.database_url == "postgresql+asyncpg://u@h:5432/d"


def test_secret_from_file_never_in_repr_or_errors(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    monkeypatch.setenv("BOT_TOKEN_FILE", str(token_file))
    password_file = tmp_path / "pw"
    password_file.write_text("s3cr:et@")
    monkeypatch.setenv("POSTGRES_PASSWORD_FILE", str(password_file))
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://bot@db:5432/horo")
    s = load_settings()
    assert s.bot_token is not None and s.bot_token.get_secret_value() == TOKEN
    assert s.bot_id == 123456789
    assert TOKEN not in repr(s) and TOKEN not in str(s.model_dump())
    assert "s3cr" not in repr(s)
    assert s.database_url_with_password() == "postgresql+asyncpg://bot:s3cr%3Aet%40@db:5432/horo"

    monkeypatch.setenv("BOT_TIMEZONE", "Nowhere/Zone")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert TOKEN not in str(info.value)


def test_missing_secret_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BOT_TOKEN_FILE", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="BOT_TOKEN_FILE: cannot read"):
        load_settings()


def test_malformed_token_is_rejected_without_echo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOT_TOKEN", "not-a-token-secretvalue")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "secretvalue" not in str(info.value)


def test_webhook_mode_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert load_settings().webhook_url is None  # unset: long polling
    assert load_settings(webhook_url="  ").webhook_url is None
    secret = tmp_path / "webhook_secret"
    secret.write_text("from-a_file-42\n")
    monkeypatch.setenv("WEBHOOK_URL", "https://bot.example.com:8443/tg/webhook")
    monkeypatch.setenv("WEBHOOK_SECRET_FILE", str(secret))
    s = load_settings()
    assert s.webhook_secret is not None
    assert s.webhook_secret.get_secret_value() == "from-a_file-42"
    assert "from-a_file" not in repr(s)
    assert s.webhook_path == "/tg/webhook"
    assert (s.webhook_listen, s.webhook_max_connections) == ("127.0.0.1:8081", 40)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"webhook_url": "https://x.example/h"}, "WEBHOOK_SECRET: required when WEBHOOK_URL"),
        (
            {"webhook_url": "http://x.example/h", "webhook_secret": "abc"},
            "WEBHOOK_URL: Telegram delivers webhooks over HTTPS only",
        ),
        (
            {"webhook_url": "https://x.example:9000/h", "webhook_secret": "abc"},
            "ports 443, 80, 88, 8443",
        ),
        ({"webhook_url": "https:///tg/webhook", "webhook_secret": "abc"}, "no host name"),
        (
            {"webhook_url": "https://x.example/h", "webhook_secret": "has space"},
            "WEBHOOK_SECRET: 1-256 characters",
        ),
        ({"webhook_listen": "8081"}, "WEBHOOK_LISTEN: not host:port"),
        ({"webhook_max_connections": 101}, "WEBHOOK_MAX_CONNECTIONS"),
        ({"push_rate_per_second": 31}, "above 30/s Telegram needs paid broadcasts"),
        (
            {"push_rate_per_second": 1001, "push_paid_broadcast": True},
            "PUSH_RATE_PER_SECOND",
        ),
    ],
)
def test_webhook_and_push_settings_are_checked(values: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_settings(**values)


def test_a_local_bot_api_server_may_take_a_plain_http_webhook_and_any_port() -> None:
    s = load_settings(
        telegram_api_url="http://127.0.0.1:8081",
        webhook_url="http://10.0.0.5:9000/hook",
        webhook_secret="abc",
    )
    assert s.webhook_url == "http://10.0.0.5:9000/hook"


def test_paid_broadcasts_allow_up_to_1000_per_second() -> None:
    assert load_settings().push_rate_per_second == 25
    s = load_settings(push_rate_per_second=1000, push_paid_broadcast=True)
    assert s.push_rate_per_second == 1000 and s.push_paid_broadcast


def test_store_url_passwords_never_in_repr() -> None:
    s = load_settings(
        database_url="postgresql+asyncpg://bot:pg-s3cret@db:5432/horo",
        redis_url="redis://:redis-s3cret@cache:6379/0",
    )
    assert "pg-s3cret" not in repr(s) and "redis-s3cret" not in repr(s)
