"""In-process model of Telegram for the Bot API double: bots, users, chats, files, updates.

Everything the HTTP layer does is a call into :meth:`BotAPIState.handle`; everything a test or
the playground does (a user writes, presses a button, blocks the bot; a fault is injected) is a
plain method here. Keeping both sides in one object, on one event loop, is what makes
``wait_for`` exact: every change wakes waiters, so tests never sleep.

Behaviour follows the real Bot API closely where a bot can observe it (response shapes, error
codes and descriptions, file_id ownership, long polling and its 409) and is simplified where it
cannot (only private chats; photos are not resized; no expiry of callback queries).
"""

from __future__ import annotations

from devtools.botapi.core import FilePart
from devtools.botapi.methods import BotSide
from devtools.botapi.users import UserSide

__all__ = ["BotAPIState", "FilePart"]


class BotAPIState(UserSide, BotSide):
    """Telegram as seen by bots (the HTTP side) and by users and tests (the Python side).

    ``conflict_policy`` decides what two concurrent getUpdates do: ``"reject_new"`` (default)
    answers the newcomer 409 at once, which is what tests want to assert; ``"terminate_old"``
    is what real Telegram does (the pending request gets the 409, the new one proceeds).
    ``auto_register`` accepts any well-formed token (the playground), otherwise only tokens
    added with :meth:`add_bot` are valid and others get 401.
    """
