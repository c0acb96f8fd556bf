from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

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
