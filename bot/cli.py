"""`python -m bot [command]`: run (default), migrate, precompute, cache-stats.

Every command loads Settings first, so a bad value stops it with one line naming the variable
and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
from collections.abc import Callable, Sequence

import structlog

from bot.config import ConfigError, Settings, load_settings
from bot.logs import configure_logging

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
    sub.add_parser("migrate", help="upgrade the database to the latest schema and exit")
    pre = sub.add_parser("precompute", help="generate horoscopes ahead of time")
    pre.add_argument("--date", type=_date, help="first date (default: today in BOT_TIMEZONE)")
    pre.add_argument("--days", type=_positive, default=2, help="number of dates (default 2)")
    stats = sub.add_parser("cache-stats", help="inspect the Redis cache: keys, memory, TTLs")
    stats.add_argument("--json", action="store_true", help="machine-readable output")
    stats.add_argument("--sample", type=int, default=200, help="keys sampled per namespace")
    return parser


def _run(settings: Settings, _args: argparse.Namespace) -> int:
    from bot import runtime
    from bot.runner import run

    return runtime.run(run(settings), use_uvloop=settings.uvloop)


def _migrate(settings: Settings, _args: argparse.Namespace) -> int:
    from bot.stores import open_stores

    async def go() -> None:
        async with open_stores(settings, migrate=True):
            pass

    asyncio.run(go())
    return 0


def _precompute(settings: Settings, args: argparse.Namespace) -> int:
    from jobs.cli import precompute_command

    return asyncio.run(precompute_command(settings, start=args.date, days=args.days))


def _cache_stats(settings: Settings, args: argparse.Namespace) -> int:
    from bot.cache_stats import cache_stats_command

    return asyncio.run(cache_stats_command(settings, as_json=args.json, sample=args.sample))


COMMANDS: dict[str, Command] = {
    "run": _run,
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
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        # Start-up failures (a store that does not answer, a port in use) get one line, not a
        # traceback; the traceback is still in the structured log at debug level.
        log.debug("command_failed", command=command, exc_info=True)
        print(f"{command} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
