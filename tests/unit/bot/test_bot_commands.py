"""Every command filter of every router ignores case: "/START leo" is /start."""

from __future__ import annotations

import pytest
from aiogram.filters import Command

from bot.telegram.handlers import routers

pytestmark = pytest.mark.unit


def test_every_command_filter_ignores_case() -> None:
    commands = [
        (router.name, handler.callback.__name__, flt.callback)
        for router in routers()
        for handler in router.message.handlers
        for flt in handler.filters or ()
        if isinstance(flt.callback, Command)
    ]
    # every command name the routers handle (a filter may name several: /today and /tomorrow)
    names = {str(name) for _, _, command in commands for name in command.commands}
    assert len(names) >= 10  # start, sign, help, today, tomorrow, settings, tz, hour, lang...
    assert {"start", "today", "tomorrow"} <= names
    for router_name, handler_name, command in commands:
        assert command.ignore_case, (router_name, handler_name)
