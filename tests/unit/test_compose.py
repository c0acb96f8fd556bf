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
