"""Routers, one per feature, in the order the dispatcher tries them.

Order matters only where filters overlap: admin commands before the fallback (so /stats from
a non-admin falls through to the "unknown command" hint), typed sign/zone names before the hint,
and the fallback last.
"""

from __future__ import annotations

from aiogram import Router

from bot.handlers import admin, errors, fallback, horoscope, inline, settings, start

__all__ = ["routers"]


def routers() -> list[Router]:
    """Fresh Router objects for one Dispatcher (see RouterFactory for why fresh)."""
    return [
        module.router.build()
        for module in (errors, admin, start, horoscope, settings, inline, fallback)
    ]
