"""`python -m bot precompute [--date YYYY-MM-DD] [--days N]`: fill the horoscope table ahead.

For an operator: before a launch, after switching the generator, or to check that the LLM
works. It uses the same function as the scheduled job (skips what exists, warms Redis, counts
no view), shows a progress bar and ends with a summary; the exit code is 1 if anything failed
so a deploy script can notice.
"""

from __future__ import annotations

import datetime as dt

import structlog
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bot.config import Settings
from bot.domain.clock import local_date, utc_now
from bot.ops.stores import LocalServers, keyspace_for, open_stores
from cache import CacheAside
from jobs.deps import JobDeps
from jobs.precompute import PrecomputeItem, PrecomputeOutcome, PrecomputeReport, run_precompute

__all__ = ["command_dates", "precompute_command"]

log = structlog.get_logger(__name__)


def command_dates(settings: Settings, start: dt.date | None, days: int) -> list[dt.date]:
    """``days`` dates from ``start`` (default: today in BOT_TIMEZONE)."""
    first = start or local_date(utc_now(), None, settings.bot_timezone)
    return [first + dt.timedelta(days=i) for i in range(days)]


def summary_table(report: PrecomputeReport) -> Table:
    table = Table(title="precompute", show_header=True)
    table.add_column("generated", justify="right")
    table.add_column("already present", justify="right")
    table.add_column("failed", justify="right")
    table.add_row(str(report.generated), str(report.present), str(report.failed))
    return table


async def precompute_command(
    settings: Settings, *, start: dt.date | None, days: int, local: LocalServers | None = None
) -> int:
    """Run precompute for the given dates with a progress bar; 0 when nothing failed, else 1."""
    from bot.domain.generation import build_generator
    from bot.domain.generation.metered import metered

    dates = command_dates(settings, start, days)
    generator = metered(
        build_generator(
            settings.horoscope_generator,
            llm_base_url=settings.llm_base_url,
            llm_api_key=settings.llm_api_key,
            llm_model=settings.llm_model,
            llm_timeout=settings.llm_timeout,
        )
    )
    console = Console(stderr=True)
    async with open_stores(settings, local=local) as stores:
        redis = stores.redis if settings.cache_enabled else None
        cache = CacheAside(redis)
        deps = JobDeps(
            settings=settings,
            cache=cache,
            keyspace=keyspace_for(settings, stores.redis),
            session_factory=stores.session_factory,
            redis=redis,
            generator=generator,
        )
        total = len(dates) * len(settings.enabled_langs) * 12
        columns = (
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        try:
            with Progress(*columns, console=console, transient=False) as progress:
                task = progress.add_task(
                    f"{dates[0].isoformat()}..{dates[-1].isoformat()}", total=total
                )

                def advance(
                    item: PrecomputeItem, outcome: PrecomputeOutcome, _r: PrecomputeReport
                ) -> None:
                    progress.advance(task)
                    if outcome is PrecomputeOutcome.FAILED:
                        progress.console.print(f"[red]failed[/red] {item}")

                report = await run_precompute(deps, dates=dates, on_progress=advance)
        finally:
            await cache.aclose()
    Console().print(summary_table(report))
    return 1 if report.failed else 0
