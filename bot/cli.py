"""`python -m bot [command]`: run (default), playground, migrate, precompute, cache-stats.

Every command loads Settings first, so a bad value stops it with one line naming the variable
and exit code 2, never a traceback.

This is the composition root's front door: it alone decides whether development tooling
(devtools/: embedded servers, the local Bot API double and playground) takes part. That
package exists in a source checkout and is not installed into the image, so there `run`
without DATABASE_URL/REDIS_URL stops with one line, and `playground` says it is unavailable.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import structlog

from bot.config import ConfigError, Settings, load_settings
from bot.ops.logs import configure_logging

if TYPE_CHECKING:
    from bot.ops.stores import LocalServers

log = structlog.get_logger(__name__)

Command = Callable[[Settings, argparse.Namespace], int]


def _date(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date YYYY-MM-DD: {value!r}") from None


def _positive(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 31:
        raise argparse.ArgumentTypeError(f"expected a number of days 1..31, got {value!r}")
    return int(value)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bot",
        description="Telegram horoscope bot with a Redis-first cache over Postgres.",
    )
    sub = parser.add_subparsers(dest="command", metavar="command")
    sub.add_parser("run", help="run the bot (default): polling, scheduler, metrics")
    sub.add_parser(
        "playground",
        help="the bot against a local Bot API with a web chat (no token; source checkout only)",
    )
    sub.add_parser("migrate", help="upgrade the database to the latest schema and exit")
    pre = sub.add_parser("precompute", help="generate horoscopes ahead of time")
    pre.add_argument("--date", type=_date, help="first date (default: today in BOT_TIMEZONE)")
    pre.add_argument("--days", type=_positive, default=2, help="number of dates (default 2)")
    stats = sub.add_parser("cache-stats", help="inspect the Redis cache: keys, memory, TTLs")
    stats.add_argument("--json", action="store_true", help="machine-readable output")
    stats.add_argument("--sample", type=int, default=200, help="keys sampled per namespace")
    return parser


def local_servers() -> LocalServers | None:
    """Embedded Postgres and Valkey (devtools/, a source checkout); None when not installed."""
    try:
        from devtools.embedded import EmbeddedStack
    except ImportError:
        return None
    return EmbeddedStack


def _run(settings: Settings, _args: argparse.Namespace) -> int:
    from bot.ops import runtime
    from bot.runner import run

    return runtime.run(run(settings, local=local_servers()), use_uvloop=settings.uvloop)


def _playground(settings: Settings, _args: argparse.Namespace) -> int:
    from bot.ops import runtime
    from bot.runner import run

    try:
        from devtools.playground import run_playground
    except ImportError:
        print(
            "playground: not available in this installation (it is development tooling: run it"
            " from a source checkout with `make run`)",
            file=sys.stderr,
        )
        return 2
    coro = run(settings, local=local_servers(), front=run_playground)
    return runtime.run(coro, use_uvloop=settings.uvloop)


def _migrate(settings: Settings, _args: argparse.Namespace) -> int:
    from bot.ops.stores import open_stores

    async def go() -> None:
        async with open_stores(settings, migrate=True, local=local_servers()):
            pass

    asyncio.run(go())
    return 0


def _precompute(settings: Settings, args: argparse.Namespace) -> int:
    from jobs.cli import precompute_command

    coro = precompute_command(settings, start=args.date, days=args.days, local=local_servers())
    return asyncio.run(coro)


def _cache_stats(settings: Settings, args: argparse.Namespace) -> int:
    from bot.ops.cache_stats import cache_stats_command

    coro = cache_stats_command(
        settings, as_json=args.json, sample=args.sample, local=local_servers()
    )
    return asyncio.run(coro)


COMMANDS: dict[str, Command] = {
    "run": _run,
    "playground": _playground,
    "migrate": _migrate,
    "precompute": _precompute,
    "cache-stats": _cache_stats,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = args.command or "run"
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    try:
        return COMMANDS[command](settings, args)
    except ConfigError as exc:  # found only when a command needs it (a store URL, say)
        print(exc, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        # Start-up failures (a store that does not answer, a port in use) get one line, not a
        # traceback; the traceback is still in the structured log at debug level.
        log.debug("command_failed", command=command, exc_info=True)
        print(f"{command} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
