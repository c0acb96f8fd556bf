"""/stats for the ids in ADMIN_IDS; everyone else gets the answer to an unknown command."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiogram.filters import Command
from aiogram.types import Message

from bot.domain.services.stats import Stats
from bot.domain.zodiac import sign_label
from bot.telegram.api import with_retry
from bot.telegram.handlers.common import RouterFactory
from bot.telegram.texts import escape
from db.types import Lang, Sign

if TYPE_CHECKING:
    from bot.telegram.context import AppContext

__all__ = ["format_stats", "router"]

router = RouterFactory("admin")


def _is_admin(message: Message, app: AppContext) -> bool:
    return message.from_user is not None and message.from_user.id in app.settings.admin_ids


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def format_stats(stats: Stats, lang: Lang) -> str:
    """Plain figures for operators; labels stay English, sign names follow the admin's lang."""
    lines = [f"<b>Stats for {stats.date.isoformat()}</b>", ""]
    lines.append(f"<b>Views today</b>: {stats.views_total}")
    for sign in Sign:
        count = stats.views.get(sign, 0)
        if count:
            lines.append(f"  {escape(sign_label(sign, lang))}: {count}")
    lines += [
        "",
        f"<b>Users</b>: {stats.users_total} total, {stats.users_today} seen today",
        f"<b>Push subscribers</b>: {stats.push_subscribers}",
        f"<b>Generations today</b>: {stats.generations_today}",
        "",
        "<b>Cache hit ratio</b>:",
    ]
    for ns, ratio in stats.hit_ratio.items():
        lines.append(f"  {escape(ns)}: {_pct(ratio)} of {stats.lookups.get(ns, 0)} lookups")
    mem = stats.redis_memory
    if mem is None:
        lines.append("<b>Redis memory</b>: unavailable")
    else:
        lines.append(
            f"<b>Redis memory</b>: {escape(mem.get('used'))} used, peak {escape(mem.get('peak'))},"
            f" max {escape(mem.get('max'))}, policy {escape(mem.get('policy'))}"
        )
    return "\n".join(lines)


@router.message(Command("stats", ignore_case=True), _is_admin)
async def stats_command(message: Message, app: AppContext, lang: Lang) -> None:
    stats = await app.stats.collect()
    text = format_stats(stats, lang)
    await with_retry(lambda: message.answer(text), what="stats")
