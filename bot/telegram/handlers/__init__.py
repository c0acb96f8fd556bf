"""Routers, one per feature, in the order the dispatcher tries them.

Order matters only where filters overlap: admin commands before the fallback (so /stats from
a non-admin falls through to the "unknown command" hint), typed sign/zone names before the hint,
and the fallback last.

Horoscope comes first because /today and the Today/Tomorrow buttons are the hot path: every
router passed costs a middleware wrap and a Command filter per message. It overlaps with no
other router: its message filters are /today, /tomorrow and an exact sign name (never a
"/command"), its callbacks DayCB and MenuCB(push), which nobody else handles; only ``errors``
has error handlers, so its place among the others does not matter.
"""

from __future__ import annotations

from aiogram import Router

from bot.telegram.handlers import admin, errors, fallback, horoscope, inline, settings, start

__all__ = ["routers"]


def routers() -> list[Router]:
    """Fresh Router objects for one Dispatcher (see RouterFactory for why fresh)."""
    return [
        module.router.build()
        for module in (horoscope, errors, admin, start, settings, inline, fallback)
    ]
