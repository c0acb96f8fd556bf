from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.config import ConfigError, load_settings
from bot.ops.stores import open_stores

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_help_lists_subcommands() -> None:
    out = _run("--help")
    assert out.returncode == 0
    for name in ("run", "migrate", "precompute", "cache-stats"):
        assert name in out.stdout


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"BOT_TIMEZONE": "Mars/Olympus"}, "BOT_TIMEZONE"),
        ({"DATABASE_URL": "nonsense"}, "DATABASE_URL"),
        ({"ADMIN_IDS": "abc"}, "ADMIN_IDS"),
    ],
)
def test_bad_config_exits_with_one_line(env: dict[str, str], needle: str) -> None:
    out = _run("run", **env)
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    assert needle in lines[0]
    assert "Traceback" not in out.stderr


def test_bad_argument_is_rejected() -> None:
    out = _run("precompute", "--date", "tomorrow")
    assert out.returncode == 2
    assert "not a date" in out.stderr


@pytest.mark.parametrize("token", ["", "   ", "not-a-token", "123:has space inside"])
def test_run_refuses_an_empty_or_malformed_token(token: str) -> None:
    out = _run("run", BOT_TOKEN=token)
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "BOT_TOKEN" in lines[0], out.stderr
    assert out.stdout == ""  # nothing started: no playground banner, no log lines


def test_run_refuses_an_empty_secret_file(tmp_path: Path) -> None:
    empty = tmp_path / "telegram_bot_token"
    empty.write_text("\n")
    out = _run("run", BOT_TOKEN_FILE=str(empty))
    assert out.returncode == 2
    assert "BOT_TOKEN is not set or empty" in out.stderr
    assert "playground" not in out.stdout


def test_run_without_store_urls_outside_a_checkout_names_them(tmp_path: Path) -> None:
    """The installed package has no devtools: no embedded servers, one line instead."""

    async def go() -> None:
        async with open_stores(load_settings(database_url="", redis_url=""), local=None):
            pass

    with pytest.raises(ConfigError, match="DATABASE_URL and REDIS_URL not set"):
        asyncio.run(go())
