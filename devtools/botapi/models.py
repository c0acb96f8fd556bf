"""Plain data kept by the Bot API double: users, bots, files, messages, recorded calls.

These are deliberately dataclasses, not aiogram types: the double must answer with the JSON
Telegram would send (including fields aiogram might not model yet), and tests and the
playground UI read and mutate them directly.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any, NamedTuple

__all__ = [
    "APIError",
    "FakeBot",
    "FakeUser",
    "RecordedCall",
    "StoredFile",
    "StoredMessage",
    "Upload",
    "WebhookDelivery",
]


class APIError(Exception):
    """A Bot API error answer: becomes ``{"ok": false, "error_code", "description"}``.

    Raising it anywhere inside a method implementation is how the double fails a request, so
    the HTTP layer needs no knowledge of individual methods.
    """

    def __init__(self, error_code: int, description: str, retry_after: int | None = None) -> None:
        super().__init__(f"{error_code}: {description}")
        self.error_code = error_code
        self.description = description
        self.retry_after = retry_after

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "ok": False,
            "error_code": self.error_code,
            "description": self.description,
        }
        if self.retry_after is not None:
            body["parameters"] = {"retry_after": self.retry_after}
        return body


def bad_request(detail: str) -> APIError:
    """400 with Telegram's "Bad Request: " prefix, which aiogram shows verbatim."""
    return APIError(400, f"Bad Request: {detail}")


@dataclass
class FakeUser:
    """A Telegram user who talks to the bot(s). ``started`` = has opened a chat with the bots."""

    id: int
    first_name: str = "Test"
    language_code: str | None = "en"
    username: str | None = None
    last_name: str | None = None
    is_premium: bool = False
    started: bool = True
    blocked_by: set[int] = field(default_factory=set)  # bot ids this user has blocked

    def to_api(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "is_bot": False, "first_name": self.first_name}
        if self.last_name:
            data["last_name"] = self.last_name
        if self.username:
            data["username"] = self.username
        if self.language_code:
            data["language_code"] = self.language_code
        if self.is_premium:
            data["is_premium"] = True
        return data

    def chat(self) -> dict[str, Any]:
        """The private chat object, as Telegram puts it in ``message.chat``."""
        data: dict[str, Any] = {"id": self.id, "type": "private", "first_name": self.first_name}
        if self.last_name:
            data["last_name"] = self.last_name
        if self.username:
            data["username"] = self.username
        return data


@dataclass
class FakeBot:
    """One bot token known to the double, with its own update queue and settings."""

    id: int
    token: str
    first_name: str
    username: str
    supports_inline_queries: bool = True
    updates: deque[dict[str, Any]] = field(default_factory=deque)
    next_update_id: int = 100_000
    allowed_updates: list[str] | None = None
    webhook_url: str = ""
    webhook_secret: str | None = None
    webhook_max_connections: int = 40
    webhook_last_error_date: int | None = None
    webhook_last_error_message: str | None = None
    commands: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    active_poll: asyncio.Future[None] | None = None
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "is_bot": True,
            "first_name": self.first_name,
            "username": self.username,
        }

    def get_me(self) -> dict[str, Any]:
        return {
            **self.to_api(),
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": self.supports_inline_queries,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }


class Upload(NamedTuple):
    """What ``calls`` shows in place of an uploaded file part (bytes are in ``files``)."""

    filename: str
    size: int
    sha256: str


@dataclass
class StoredFile:
    """One file_id issued by the double.

    Every PhotoSize of one upload shares ``group`` (the upload) and ``data`` (the uploaded bytes:
    the double does not resize), so re-sending any of them re-sends the whole photo.
    """

    file_id: str
    file_unique_id: str
    bot_id: int
    group: str
    width: int
    height: int
    file_size: int
    file_path: str
    data: bytes | None = None
    filename: str | None = None
    source_url: str | None = None
    forgotten: bool = False

    def photo_size(self) -> dict[str, Any]:
        return {
            "file_id": self.file_id,
            "file_unique_id": self.file_unique_id,
            "file_size": self.file_size,
            "width": self.width,
            "height": self.height,
        }


@dataclass
class StoredMessage:
    """A message in a private chat: sent by the bot (``outgoing``) or by the user.

    Edits change it in place (``edit_date`` set); deletion only flags it so a UI can still show
    what happened.
    """

    bot_id: int
    chat_id: int
    message_id: int
    date: int
    outgoing: bool
    text: str | None = None
    entities: list[dict[str, Any]] | None = None
    caption: str | None = None
    caption_entities: list[dict[str, Any]] | None = None
    photo: list[dict[str, Any]] | None = None
    reply_markup: dict[str, Any] | None = None  # inline keyboard only, echoed back like Telegram
    reply_keyboard: dict[str, Any] | None = None  # reply/remove keyboard: not echoed
    reply_to_message_id: int | None = None
    has_spoiler: bool = False
    edit_date: int | None = None
    deleted: bool = False
    raw_user_message: dict[str, Any] | None = None  # incoming messages: the update's message

    @property
    def file_id(self) -> str | None:
        """file_id of the largest photo size, the one a bot would store."""
        return self.photo[-1]["file_id"] if self.photo else None

    def buttons(self) -> list[dict[str, Any]]:
        """All inline buttons, flattened row by row."""
        if not self.reply_markup:
            return []
        return [b for row in self.reply_markup.get("inline_keyboard", []) for b in row]


class _CallFields(NamedTuple):
    method: str
    params: dict[str, Any]
    at: float
    outcome: str | int


class RecordedCall(_CallFields):
    """One Bot API request: a ``(method, params, at, outcome)`` tuple plus ``bot_id``, ``tag``.

    ``at`` is ``time.monotonic()`` when the request arrived; ``outcome`` is ``"ok"`` or the
    error code. Requests are appended when they finish (so a long poll shows up when it returns).
    ``params`` has JSON fields decoded, numbers/booleans converted, and uploads as
    :class:`Upload`. ``bot_id`` is an attribute, not a tuple item, so 4-way unpacking works.
    ``tag``: the path segment before ``/bot<token>/`` when the client used a base URL with one
    (``http://host:port/<tag>``): which of several bot processes made the call.
    """

    bot_id: int
    tag: str

    def __new__(
        cls,
        method: str,
        params: dict[str, Any],
        at: float,
        outcome: str | int,
        bot_id: int = 0,
        tag: str = "",
    ) -> RecordedCall:
        self = super().__new__(cls, method, params, at, outcome)
        self.bot_id = bot_id
        self.tag = tag
        return self

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


@dataclass
class WebhookDelivery:
    """One attempt to deliver an update to a webhook: where, when, and how it ended.

    ``status``: the HTTP status of the answer, None when there was none (``error`` says why:
    connection refused or reset, timeout). ``at``/``finished`` are ``time.monotonic()``.
    """

    update_id: int
    url: str
    attempt: int
    at: float
    finished: float = 0.0
    status: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def chat_instance(bot_id: int, chat_id: int) -> str:
    """Stable per (bot, chat) like Telegram's, opaque to the bot."""
    digest = hashlib.sha256(f"{bot_id}:{chat_id}".encode()).digest()
    return str(int.from_bytes(digest[:8], "big", signed=True))
