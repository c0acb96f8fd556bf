"""Docker is not available here: check the production files' properties instead."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def test_postgres_service() -> None:
    pg = _compose()["services"]["postgres"]
    assert pg["image"] == "postgres:16"
    assert pg["environment"]["POSTGRES_PASSWORD_FILE"].startswith("/run/secrets/")
    assert any("/var/lib/postgresql/data" in v for v in pg["volumes"])
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])


def test_redis_service_keeps_buffers() -> None:
    redis = _compose()["services"]["redis"]
    assert redis["image"].startswith("redis:7")
    cmd = " ".join(redis["command"])
    assert "--maxmemory-policy volatile-lru" in cmd
    assert "--maxmemory " in cmd
    assert "--appendonly yes" in cmd
    assert "redis-cli" in redis["healthcheck"]["test"] and "ping" in redis["healthcheck"]["test"]


def test_bot_service() -> None:
    compose = _compose()
    bot = compose["services"]["bot"]
    assert bot["profiles"] == ["polling"]
    assert "WEBHOOK_URL" not in bot["environment"]  # long polling: one process
    assert bot["build"] == "."
    for dep in ("postgres", "redis"):
        assert bot["depends_on"][dep]["condition"] == "service_healthy"
    env = bot["environment"]
    assert env["RUN_MIGRATIONS"] == "true"
    assert env["BOT_TOKEN_FILE"].startswith("/run/secrets/")
    assert "BOT_TOKEN" not in env
    assert "/readyz" in " ".join(bot["healthcheck"]["test"])
    assert set(bot["secrets"]) <= set(compose["secrets"])


def test_dockerfile_runs_as_non_root() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "\nUSER bot" in text
    assert "useradd" in text
    assert 'CMD ["python", "-m", "bot", "run"]' in text


def test_scale_profile_replicates_the_bot_behind_nginx() -> None:
    services = _compose()["services"]
    bots, nginx = services["bot-webhook"], services["nginx"]
    assert bots["profiles"] == ["scale"] and nginx["profiles"] == ["scale"]
    assert bots["deploy"]["replicas"] >= 2
    assert "ports" not in bots  # nginx is the only door
    env = bots["environment"]
    assert env["WEBHOOK_URL"].startswith("https://")
    assert env["WEBHOOK_SECRET_FILE"] == "/run/secrets/webhook_secret"
    assert "webhook_secret" in bots["secrets"]
    assert env["WEBHOOK_LISTEN"] == "0.0.0.0:8081"
    # the same stores and secrets as the single bot
    for key in ("DATABASE_URL", "REDIS_URL", "BOT_TOKEN_FILE", "RUN_MIGRATIONS"):
        assert env[key] == services["bot"]["environment"][key]
    assert bots["depends_on"] == services["bot"]["depends_on"]
    assert "/readyz" in " ".join(bots["healthcheck"]["test"])
    # Postgres connections: replicas x pool stays under postgres:16's default of 100
    pool = int(env["DB_POOL_SIZE"]) + int(env["DB_MAX_OVERFLOW"])
    assert bots["deploy"]["replicas"] * pool < 100
    assert nginx["depends_on"]["bot-webhook"]["condition"] == "service_healthy"
    assert "./deploy/nginx.conf:/etc/nginx/nginx.conf:ro" in nginx["volumes"]
    assert any(port.endswith(":443") for port in nginx["ports"])


def test_polling_and_webhook_never_run_together() -> None:
    """A poller calls deleteWebhook at start: it must not share a profile with the webhook."""
    services = _compose()["services"]
    profiles = {name: set(s.get("profiles", [])) for name, s in services.items()}
    assert profiles["bot"] and profiles["bot-webhook"]
    assert not profiles["bot"] & (profiles["bot-webhook"] | profiles["nginx"])
    always = {name for name, p in profiles.items() if not p}
    assert always == {"postgres", "redis"}


def test_nginx_config_terminates_tls_and_proxies_the_webhook_path() -> None:
    conf = (ROOT / "deploy" / "nginx.conf").read_text()
    bots = _compose()["services"]["bot-webhook"]["environment"]
    path = "/" + bots["WEBHOOK_URL"].split("://", 1)[1].split("/", 1)[1]
    assert f"location = {path} {{" in conf
    assert "listen 443 ssl;" in conf
    assert "ssl_certificate     /run/secrets/tls_certificate;" in conf
    listen_port = bots["WEBHOOK_LISTEN"].rsplit(":", 1)[1]
    assert f"server bot-webhook:{listen_port} resolve" in conf
    assert "proxy_pass http://bot_webhook;" in conf
    # Telegram waits 60 s for an answer: nginx must wait at least as long
    read_timeout = int(conf.split("proxy_read_timeout ", 1)[1].split("s;", 1)[0])
    assert read_timeout >= 60
    assert "non_idempotent" not in conf  # nginx never resends a POST it already sent
    secrets = _compose()["secrets"]
    assert {"webhook_secret", "tls_certificate", "tls_private_key"} <= set(secrets)
