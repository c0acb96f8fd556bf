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

import asyncio
import contextlib
import hashlib
import io
import itertools
import json
import re
import secrets
import time
import urllib.parse
from asyncio import FIRST_COMPLETED
from collections import Counter, defaultdict, deque
from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeVar

from devtools.botapi.html import EntityParseError, parse_html, utf16_len
from devtools.botapi.models import (
    APIError,
    FakeBot,
    FakeUser,
    RecordedCall,
    StoredFile,
    StoredMessage,
    Upload,
    WebhookDelivery,
    bad_request,
    chat_instance,
)
from devtools.botapi.params import Params, normalize

__all__ = ["BotAPIState", "FilePart"]

T = TypeVar("T")

FilePart = tuple[str, bytes]  # (filename, content) of one multipart upload
ConflictPolicy = Literal["reject_new", "terminate_old"]

TOKEN_RE = re.compile(r"^(\d{1,20}):[A-Za-z0-9_-]{1,100}$")
COMMAND_RE = re.compile(r"(?<![\w/])/[A-Za-z0-9_]{1,32}(?:@[A-Za-z0-9_]{1,64})?")
BOT_COMMAND_NAME_RE = re.compile(r"^[a-z0-9_]{1,32}$")

WRONG_FILE = "wrong file identifier/HTTP URL specified"
QUERY_TOO_OLD = "query is too old and response timeout expired or query ID is invalid"
NOT_MODIFIED = (
    "message is not modified: specified new message content and reply markup are exactly the "
    "same as a current content and reply markup of the message"
)
WEBHOOK_CONFLICT = (
    "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete "
    "the webhook first"
)
WEBHOOK_SECRET_RE = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
#: Hosts a webhook may be plain HTTP on: the double plays a local Bot API server, which (unlike
#: api.telegram.org) delivers to http:// and any port.
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
POLL_CONFLICT = (
    "Conflict: terminated by other getUpdates request; make sure that only one bot instance is "
    "running"
)
# Telegram's default when allowed_updates was never set: everything but these three.
NOT_DEFAULT_UPDATES = frozenset({"chat_member", "message_reaction", "message_reaction_count"})
CHAT_ACTIONS = frozenset(
    {
        "typing",
        "upload_photo",
        "record_video",
        "upload_video",
        "record_voice",
        "upload_voice",
        "upload_document",
        "choose_sticker",
        "find_location",
        "record_video_note",
        "upload_video_note",
    }
)
BUTTON_ACTIONS = (
    "callback_data",
    "url",
    "switch_inline_query",
    "switch_inline_query_current_chat",
    "switch_inline_query_chosen_chat",
    "web_app",
    "login_url",
    "callback_game",
    "pay",
    "copy_text",
)
PHOTO_STEPS = (90, 320, 800)
PHOTO_MAX_SIDE = 1280

Method = Callable[[FakeBot, Params], Awaitable[Any]]


def _image_size(data: bytes) -> tuple[int, int]:
    """Real dimensions when Pillow can read them (it is a dev dependency), else a square."""
    try:
        from PIL import Image  # optional: Pillow is a dev dependency only

        with Image.open(io.BytesIO(data)) as img:
            return int(img.width), int(img.height)
    except Exception:  # any unreadable upload still gets a plausible size
        return PHOTO_MAX_SIDE, PHOTO_MAX_SIDE


def _photo_dims(width: int, height: int) -> list[tuple[int, int]]:
    """2-3 distinct PhotoSize dimensions, smallest first, the (capped) original last."""
    side = max(width, height, 1)
    scale_top = min(1.0, PHOTO_MAX_SIDE / side)
    top = (max(1, round(width * scale_top)), max(1, round(height * scale_top)))
    dims = [
        (max(1, round(width * s / side)), max(1, round(height * s / side)))
        for s in PHOTO_STEPS
        if s < max(top)
    ]
    if not dims:
        dims = [(max(1, top[0] // 2), max(1, top[1] // 2))]
    dims = [*dims[-2:], top]
    unique: list[tuple[int, int]] = []
    for d in dims:
        if d not in unique:
            unique.append(d)
    if len(unique) < 2:  # a 1x1 image: invent a larger "original" rather than a lone size
        unique = [(1, 1), (2, 2)]
    return unique


class BotAPIState:
    """Telegram as seen by bots (the HTTP side) and by users and tests (the Python side).

    ``conflict_policy`` decides what two concurrent getUpdates do: ``"reject_new"`` (default)
    answers the newcomer 409 at once, which is what tests want to assert; ``"terminate_old"``
    is what real Telegram does (the pending request gets the 409, the new one proceeds).
    ``auto_register`` accepts any well-formed token (the playground), otherwise only tokens
    added with :meth:`add_bot` are valid and others get 401.
    """

    def __init__(
        self,
        *,
        tokens: tuple[str, ...] | list[str] = (),
        conflict_policy: ConflictPolicy = "reject_new",
        auto_register: bool = False,
    ) -> None:
        self.conflict_policy: ConflictPolicy = conflict_policy
        self.auto_register = auto_register
        self.bots: dict[int, FakeBot] = {}
        self.users: dict[int, FakeUser] = {}
        self.files: dict[str, StoredFile] = {}
        self.file_groups: dict[str, list[StoredFile]] = {}
        self.chats: dict[tuple[int, int], list[StoredMessage]] = defaultdict(list)
        self.inline_messages: dict[str, StoredMessage] = {}
        self.calls: list[RecordedCall] = []
        self.callback_answers: list[dict[str, Any]] = []
        self.inline_answers: list[dict[str, Any]] = []
        self.chat_actions: list[dict[str, Any]] = []
        #: every attempt to deliver an update to a webhook, in the order they ended
        self.webhook_deliveries: list[WebhookDelivery] = []
        self._held_tags: dict[str, asyncio.Event] = {}
        self._held_now: dict[str, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
        self.callback_queries: dict[str, dict[str, Any]] = {}
        self.inline_queries: dict[str, dict[str, Any]] = {}
        self._message_ids: Counter[tuple[int, int]] = Counter()
        self._faults: dict[str, deque[APIError]] = defaultdict(deque)
        self._rate_limits: dict[str, tuple[int, int]] = {}
        self._rate_counts: Counter[str] = Counter()
        self._uploads: Counter[int] = Counter()
        self._file_id_sends: Counter[int] = Counter()
        self._file_seq = itertools.count(1)
        self._subscribers: set[asyncio.Queue[dict[str, Any]]] = set()
        self._changed = asyncio.Event()
        self._methods: dict[str, Method] = {
            name[len("_m_") :]: getattr(self, name) for name in dir(self) if name.startswith("_m_")
        }
        for token in tokens:
            self.add_bot(token)

    def release_polls(self) -> None:
        """Answer every pending long poll now (with what is queued): used when stopping."""
        for bot in self.bots.values():
            if bot.active_poll is not None and not bot.active_poll.done():
                bot.active_poll.set_result(None)

    # ------------------------------------------------------------------ registry

    def add_bot(
        self, token: str, *, username: str | None = None, first_name: str | None = None
    ) -> FakeBot:
        """Register a bot token (idempotent); the bot id is the number before ':'."""
        m = TOKEN_RE.match(token)
        if m is None:
            raise ValueError(f"malformed bot token: {token!r}")
        bot_id = int(m.group(1))
        existing = self.bots.get(bot_id)
        if existing is not None:
            if existing.token != token:
                raise ValueError(f"bot {bot_id} is already registered with another token")
            return existing
        bot = FakeBot(
            id=bot_id,
            token=token,
            first_name=first_name or "Horoscope Test Bot",
            username=username or f"test_{bot_id}_bot",
        )
        self.bots[bot_id] = bot
        return bot

    def bot(self, bot_id: int | None = None) -> FakeBot:
        """A bot by id, or the first registered one (what tests with one bot want)."""
        if bot_id is not None:
            return self.bots[bot_id]
        if not self.bots:
            raise LookupError("no bot registered: call add_bot(token) first")
        return next(iter(self.bots.values()))

    def user(
        self,
        user_id: int,
        first_name: str = "Test",
        language_code: str | None = "en",
        username: str | None = None,
        **extra: Any,
    ) -> FakeUser:
        """Create a user, or return the existing one updated with the non-default arguments.

        Only arguments that differ from the defaults touch an existing user, so ``user(42)``
        is a safe lookup that does not rename the user a fixture set up.
        """
        existing = self.users.get(user_id)
        if existing is None:
            existing = FakeUser(
                id=user_id,
                first_name=first_name,
                language_code=language_code,
                username=username,
                **extra,
            )
            self.users[user_id] = existing
            return existing
        changes: dict[str, Any] = dict(extra)
        if first_name != "Test":
            changes["first_name"] = first_name
        if language_code != "en":
            changes["language_code"] = language_code
        if username is not None:
            changes["username"] = username
        for key, value in changes.items():
            setattr(existing, key, value)
        return existing

    def _ensure_user(self, user_id: int) -> FakeUser:
        return self.users.get(user_id) or self.user(user_id)

    def _authorize(self, token: str) -> FakeBot:
        m = TOKEN_RE.match(token)
        if m is None:
            raise APIError(401, "Unauthorized")
        bot = self.bots.get(int(m.group(1)))
        if bot is None and self.auto_register:
            bot = self.add_bot(token)
        if bot is None or bot.token != token:
            raise APIError(401, "Unauthorized")
        return bot

    # ------------------------------------------------------------------ change notification

    def _touch(self) -> None:
        """Wake everything waiting in :meth:`wait_for`."""
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    def subscribe(self, maxsize: int = 1000) -> asyncio.Queue[dict[str, Any]]:
        """A queue that receives a dict for every bot-visible change (for an SSE endpoint).

        Event types: message_sent, message_edited, message_deleted, user_message,
        callback_query, inline_query, callback_answered, inline_answered, chat_action,
        update_queued. A subscriber that falls ``maxsize`` behind loses its oldest events
        rather than growing without bound.
        """
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=maxsize)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        self._subscribers.discard(queue)

    def _emit(self, kind: str, **data: Any) -> None:
        event = {"type": kind, "at": time.time(), **data}
        for queue in list(self._subscribers):
            if queue.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
            queue.put_nowait(event)
        self._touch()

    async def wait_for(self, predicate: Callable[[], T], timeout: float = 5.0) -> T:  # noqa: ASYNC109
        """Wait until ``predicate()`` is truthy and return its value.

        Re-checked on every recorded call and state change; additionally every 50 ms so a
        predicate may also look at things outside the double (the bot's database).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            result = predicate()
            if result:
                return result
            remaining = deadline - loop.time()
            if remaining <= 0:
                recent = ", ".join(f"{c.method}:{c.outcome}" for c in self.calls[-10:])
                raise TimeoutError(f"condition not met within {timeout}s; last calls: [{recent}]")
            event = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), min(remaining, 0.05))

    # ------------------------------------------------------------------ faults

    def fail_next(
        self,
        method: str,
        *,
        error_code: int,
        description: str,
        retry_after: int | None = None,
        times: int = 1,
    ) -> None:
        """Make the next ``times`` calls of ``method`` (any bot) fail with this error."""
        for _ in range(times):
            self._faults[method.lower()].append(APIError(error_code, description, retry_after))

    def set_rate_limit(self, method: str, every_n: int = 300, retry_after: int = 1) -> None:
        """Every ``every_n``-th call of ``method`` gets 429 with ``retry_after``; 0 disables."""
        key = method.lower()
        self._rate_counts[key] = 0
        if every_n <= 0:
            self._rate_limits.pop(key, None)
        else:
            self._rate_limits[key] = (every_n, retry_after)

    def clear_faults(self) -> None:
        self._faults.clear()
        self._rate_limits.clear()
        self._rate_counts.clear()

    def hold_calls(self, tag: str) -> None:
        """Calls from the client tagged ``tag`` (its base URL ends in ``/<tag>``) wait, unanswered,
        until :meth:`release_calls` or until the client goes away (then they never happen: a
        bot process killed while waiting for Telegram's answer)."""
        self._held_tags.setdefault(tag, asyncio.Event())

    def release_calls(self, tag: str) -> None:
        event = self._held_tags.pop(tag, None)
        if event is not None:
            event.set()

    def held_calls(self, tag: str) -> int:
        """How many calls of ``tag`` are waiting right now."""
        return len(self._held_now[tag])

    def held(self, tag: str) -> list[tuple[str, dict[str, Any]]]:
        """The calls of ``tag`` waiting right now: (method, params) each."""
        return list(self._held_now[tag])

    def record_delivery(self, delivery: WebhookDelivery) -> None:
        self.webhook_deliveries.append(delivery)
        self._touch()

    def deliveries_of(self, update_id: int) -> list[WebhookDelivery]:
        return [d for d in self.webhook_deliveries if d.update_id == update_id]

    def _webhook_changed(self, bot: FakeBot) -> None:
        """Hook for the HTTP server: start or stop delivering ``bot``'s updates."""

    def _check_faults(self, method: str) -> None:
        queue = self._faults.get(method)
        if queue:
            raise queue.popleft()
        limit = self._rate_limits.get(method)
        if limit is not None:
            self._rate_counts[method] += 1
            every_n, retry_after = limit
            if self._rate_counts[method] % every_n == 0:
                raise APIError(
                    429, f"Too Many Requests: retry after {retry_after}", retry_after=retry_after
                )

    def block(self, user_id: int, *, bot_id: int | None = None, notify: bool = True) -> None:
        """The user blocks the bot: sends get 403 and the bot gets a my_chat_member update."""
        bot, user = self.bot(bot_id), self._ensure_user(user_id)
        if bot.id not in user.blocked_by:
            user.blocked_by.add(bot.id)
            if notify:
                self._member_update(bot, user, "member", "kicked")
            self._touch()

    def unblock(self, user_id: int, *, bot_id: int | None = None, notify: bool = True) -> None:
        bot, user = self.bot(bot_id), self._ensure_user(user_id)
        if bot.id in user.blocked_by:
            user.blocked_by.discard(bot.id)
            if notify:
                self._member_update(bot, user, "kicked", "member")
            self._touch()

    def _member_update(self, bot: FakeBot, user: FakeUser, old: str, new: str) -> None:
        now = int(time.time())
        self._enqueue(
            bot,
            "my_chat_member",
            {
                "chat": user.chat(),
                "from": user.to_api(),
                "date": now,
                "old_chat_member": {"user": bot.to_api(), "status": old},
                "new_chat_member": {
                    "user": bot.to_api(),
                    "status": new,
                    **({"until_date": 0} if new == "kicked" else {}),
                },
            },
        )

    def forget_file_ids(self, bot_id: int | None = None) -> int:
        """Invalidate every file_id issued so far (files purged); returns how many."""
        count = 0
        for stored in self.files.values():
            if not stored.forgotten and (bot_id is None or stored.bot_id == bot_id):
                stored.forgotten = True
                count += 1
        self._touch()
        return count

    def delete_message_for_user(
        self, chat_id: int, message_id: int, *, bot_id: int | None = None
    ) -> bool:
        """The user deletes a message (for both sides, as in private chats)."""
        msg = self.message(chat_id, message_id, bot_id=bot_id)
        if msg is None or msg.deleted:
            return False
        msg.deleted = True
        self._emit(
            "message_deleted", bot_id=msg.bot_id, chat_id=chat_id, message_id=message_id, by="user"
        )
        return True

    # ------------------------------------------------------------------ user actions

    def _enqueue(self, bot: FakeBot, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
        update = {"update_id": bot.next_update_id, kind: payload}
        bot.next_update_id += 1
        bot.updates.append(update)
        bot.wakeup, event = asyncio.Event(), bot.wakeup
        event.set()
        self._emit("update_queued", bot_id=bot.id, update=update)
        return update

    def send_text(
        self, user_id: int, text: str, *, bot_id: int | None = None, reply_to: int | None = None
    ) -> dict[str, Any]:
        """The user writes ``text`` to the bot; returns the queued Update (``["message"]``).

        Commands get ``bot_command`` entities like Telegram adds them. Writing to a bot
        implies having started and unblocked it. ``reply_to``: the message (of this chat) the
        user replies to; the update carries it as ``reply_to_message``, as Telegram does.
        """
        bot, user = self.bot(bot_id), self._ensure_user(user_id)
        if bot.id in user.blocked_by:
            self.unblock(user_id, bot_id=bot.id)
        user.started = True
        if reply_to is not None:
            target = self.message(user.id, reply_to, bot_id=bot.id)
            if target is None or target.deleted:
                raise ValueError(f"no message {reply_to} in the chat of user {user_id}")
        entities = []
        for m in COMMAND_RE.finditer(text):
            entities.append(
                {
                    "type": "bot_command",
                    "offset": utf16_len(text[: m.start()]),
                    "length": utf16_len(m.group(0)),
                }
            )
        msg = self._new_message(
            bot,
            user,
            outgoing=False,
            text=text,
            entities=entities or None,
            reply_to_message_id=reply_to,
        )
        payload = self.message_to_api(msg)
        msg.raw_user_message = payload
        self._emit("user_message", bot_id=bot.id, chat_id=user.id, message=payload)
        return self._enqueue(bot, "message", payload)

    def press_button(
        self, user_id: int, message_id: int, callback_data: str, *, bot_id: int | None = None
    ) -> str:
        """The user presses an inline button; returns the callback query id.

        For an unknown or deleted message the update carries an InaccessibleMessage (date 0),
        as Telegram does for messages too old to show.
        """
        bot, user = self.bot(bot_id), self._ensure_user(user_id)
        msg = self.message(user_id, message_id, bot_id=bot.id)
        if msg is not None and not msg.deleted:
            message = self.message_to_api(msg)
        else:
            message = {"message_id": message_id, "chat": user.chat(), "date": 0}
        query_id = str(secrets.randbits(62))
        self.callback_queries[query_id] = {
            "bot_id": bot.id,
            "user_id": user_id,
            "message_id": message_id,
            "data": callback_data,
            "answered": False,
        }
        payload = {
            "id": query_id,
            "from": user.to_api(),
            "message": message,
            "chat_instance": chat_instance(bot.id, user_id),
            "data": callback_data,
        }
        self._emit("callback_query", bot_id=bot.id, chat_id=user_id, callback_query=payload)
        self._enqueue(bot, "callback_query", payload)
        return query_id

    def click(
        self,
        user_id: int,
        button_text: str,
        *,
        message_id: int | None = None,
        bot_id: int | None = None,
    ) -> str:
        """Press the callback button labelled ``button_text`` (latest message that has one)."""
        bot = self.bot(bot_id)
        candidates = self.messages(user_id, bot_id=bot.id)
        if message_id is not None:
            candidates = [m for m in candidates if m.message_id == message_id]
        for msg in reversed(candidates):
            for button in msg.buttons():
                if button.get("text") == button_text and "callback_data" in button:
                    return self.press_button(
                        user_id, msg.message_id, button["callback_data"], bot_id=bot.id
                    )
        raise LookupError(f"no callback button {button_text!r} in chat {user_id}")

    def inline_query(
        self,
        user_id: int,
        query: str,
        *,
        offset: str = "",
        chat_type: str = "sender",
        bot_id: int | None = None,
    ) -> str:
        """The user types ``@bot query`` somewhere; returns the inline query id."""
        bot, user = self.bot(bot_id), self._ensure_user(user_id)
        query_id = str(secrets.randbits(62))
        self.inline_queries[query_id] = {
            "bot_id": bot.id,
            "user_id": user_id,
            "query": query,
            "answered": False,
        }
        payload = {
            "id": query_id,
            "from": user.to_api(),
            "query": query,
            "offset": offset,
            "chat_type": chat_type,
        }
        self._emit("inline_query", bot_id=bot.id, chat_id=user_id, inline_query=payload)
        self._enqueue(bot, "inline_query", payload)
        return query_id

    def choose_inline_result(
        self, user_id: int, result_id: str, query: str, *, bot_id: int | None = None
    ) -> dict[str, Any]:
        """The user picks an inline result; returns the queued ChosenInlineResult update.

        Like Telegram, ``inline_message_id`` is present only when the chosen result (from the
        bot's latest answer to this user) has an inline keyboard; that message can be edited.
        """
        bot, user = self.bot(bot_id), self._ensure_user(user_id)
        payload: dict[str, Any] = {"result_id": result_id, "from": user.to_api(), "query": query}
        for answer in reversed(self.inline_answers):
            if answer["bot_id"] != bot.id or answer["user_id"] != user_id:
                continue
            result = next((r for r in answer["results"] if str(r.get("id")) == result_id), None)
            if result is None:
                continue
            if result.get("reply_markup"):
                inline_id = secrets.token_urlsafe(18)
                content = result.get("input_message_content") or {}
                self.inline_messages[inline_id] = StoredMessage(
                    bot_id=bot.id,
                    chat_id=user_id,
                    message_id=0,
                    date=int(time.time()),
                    outgoing=True,
                    text=content.get("message_text"),
                    caption=result.get("caption"),
                    reply_markup=result["reply_markup"],
                )
                payload["inline_message_id"] = inline_id
            break
        return self._enqueue(bot, "chosen_inline_result", payload)

    def send_raw_update(self, update: dict[str, Any], *, bot_id: int | None = None) -> int:
        """Queue any update dict as-is (fuzzing); an update_id is assigned when missing."""
        bot = self.bot(bot_id)
        update = dict(update)
        if "update_id" not in update:
            update["update_id"] = bot.next_update_id
        bot.next_update_id = max(bot.next_update_id, int(update["update_id"])) + 1
        bot.updates.append(update)
        bot.wakeup, event = asyncio.Event(), bot.wakeup
        event.set()
        self._emit("update_queued", bot_id=bot.id, update=update)
        return int(update["update_id"])

    # ------------------------------------------------------------------ inspection

    def message(
        self, chat_id: int, message_id: int, *, bot_id: int | None = None
    ) -> StoredMessage | None:
        for (b_id, c_id), history in self.chats.items():
            if c_id != chat_id or (bot_id is not None and b_id != bot_id):
                continue
            for msg in history:
                if msg.message_id == message_id:
                    return msg
        return None

    def messages(
        self,
        chat_id: int,
        *,
        bot_id: int | None = None,
        include_incoming: bool = False,
        include_deleted: bool = False,
    ) -> list[StoredMessage]:
        """Messages the bot sent in a chat, oldest first (optionally the user's and deleted)."""
        found = [
            msg
            for (b_id, c_id), history in self.chats.items()
            if c_id == chat_id and (bot_id is None or b_id == bot_id)
            for msg in history
            if (include_incoming or msg.outgoing) and (include_deleted or not msg.deleted)
        ]
        found.sort(key=lambda m: (m.date, m.bot_id, m.message_id))
        return found

    def last_message(self, chat_id: int, *, bot_id: int | None = None) -> StoredMessage | None:
        """The newest message the bot sent in this chat that is not deleted."""
        found = self.messages(chat_id, bot_id=bot_id)
        return max(found, key=lambda m: m.message_id) if found else None

    def chat_history(self, chat_id: int, *, bot_id: int | None = None) -> list[dict[str, Any]]:
        """Both sides of a chat as Message JSON plus ``outgoing``/``deleted``: what a UI renders.

        Photos carry ``file_path`` of their largest size so a page can fetch the bytes from
        ``/file/bot{token}/{file_path}``; a bot message sent with a reply keyboard or ForceReply
        carries it as ``reply_keyboard`` (not part of Telegram's Message, but what a client shows).
        """
        history = []
        for msg in self.messages(
            chat_id, bot_id=bot_id, include_incoming=True, include_deleted=True
        ):
            data = self.message_to_api(msg)
            data["outgoing"], data["deleted"] = msg.outgoing, msg.deleted
            if msg.reply_keyboard is not None:
                data["reply_keyboard"] = msg.reply_keyboard
            if msg.file_id and msg.file_id in self.files:
                data["file_path"] = self.files[msg.file_id].file_path
            history.append(data)
        return history

    def calls_to(self, method: str) -> list[RecordedCall]:
        return [c for c in self.calls if c.method.lower() == method.lower()]

    def uploads(self, bot_id: int | None = None) -> int:
        """How many files were uploaded as bytes (multipart), per bot or in total."""
        return self._uploads[bot_id] if bot_id is not None else sum(self._uploads.values())

    def sent_by_file_id(self, bot_id: int | None = None) -> int:
        """How many photos were sent (or set by editMessageMedia) by re-using a file_id."""
        if bot_id is not None:
            return self._file_id_sends[bot_id]
        return sum(self._file_id_sends.values())

    def file(self, file_id: str) -> StoredFile | None:
        return self.files.get(file_id)

    def file_bytes(self, file_id: str) -> bytes | None:
        """The uploaded bytes behind a file_id (any size of the photo), for a UI to show."""
        stored = self.files.get(file_id)
        return stored.data if stored else None

    def file_by_path(self, token: str, file_path: str) -> StoredFile | None:
        bot = self._authorize(token)
        for stored in self.files.values():
            if stored.file_path == file_path and stored.bot_id == bot.id and not stored.forgotten:
                return stored
        return None

    def message_to_api(self, msg: StoredMessage, *, with_reply: bool = True) -> dict[str, Any]:
        """The Message JSON Telegram would return / deliver for a stored message."""
        user = self._ensure_user(msg.chat_id)
        data: dict[str, Any] = {
            "message_id": msg.message_id,
            "from": self.bots[msg.bot_id].to_api() if msg.outgoing else user.to_api(),
            "chat": user.chat(),
            "date": msg.date,
        }
        if msg.edit_date is not None:
            data["edit_date"] = msg.edit_date
        if with_reply and msg.reply_to_message_id is not None:
            target = self.message(msg.chat_id, msg.reply_to_message_id, bot_id=msg.bot_id)
            if target is not None and not target.deleted:
                data["reply_to_message"] = self.message_to_api(target, with_reply=False)
        if msg.text is not None:
            data["text"] = msg.text
            if msg.entities:
                data["entities"] = msg.entities
        if msg.photo is not None:
            data["photo"] = msg.photo
            if msg.has_spoiler:
                data["has_media_spoiler"] = True
        if msg.caption is not None:
            data["caption"] = msg.caption
            if msg.caption_entities:
                data["caption_entities"] = msg.caption_entities
        if msg.reply_markup is not None:
            data["reply_markup"] = msg.reply_markup
        return data

    # ------------------------------------------------------------------ request entry point

    async def handle(
        self,
        token: str,
        method: str,
        raw_params: dict[str, Any],
        files: dict[str, FilePart] | None = None,
        *,
        tag: str = "",
    ) -> tuple[int, dict[str, Any]]:
        """Run one Bot API request; returns (HTTP status, JSON body). Never raises APIError.

        ``tag``: which client (see RecordedCall.tag); its calls wait while it is held."""
        started = time.monotonic()
        files = files or {}
        bot_id = 0
        recorded: dict[str, Any] = {}
        try:
            bot = self._authorize(token)
            bot_id = bot.id
            values = normalize(raw_params)
            recorded = self._recordable(values, files)
            impl = self._methods.get(method.lower())
            if impl is None:
                raise APIError(404, "Not Found")
            held = self._held_tags.get(tag) if tag else None
            if held is not None:
                entry = (method, recorded)
                self._held_now[tag].append(entry)
                self._touch()
                try:
                    await held.wait()
                finally:
                    self._held_now[tag].remove(entry)
            self._check_faults(method.lower())
            result = await impl(bot, Params(values, files))
            status, body = 200, {"ok": True, "result": result}
        except APIError as err:
            status, body = err.error_code, err.to_json()
        except asyncio.CancelledError:
            # The client went away (a poller stopped): still worth seeing in ``calls``.
            self.calls.append(RecordedCall(method, recorded, started, "cancelled", bot_id, tag))
            self._touch()
            raise
        self.calls.append(
            RecordedCall(method, recorded, started, "ok" if status == 200 else status, bot_id, tag)
        )
        self._touch()
        return status, body

    @staticmethod
    def _recordable(values: dict[str, Any], files: dict[str, FilePart]) -> dict[str, Any]:
        def upload(name: str) -> Upload:
            filename, data = files[name]
            return Upload(filename, len(data), hashlib.sha256(data).hexdigest())

        out: dict[str, Any] = {}
        for key, value in values.items():
            if isinstance(value, str) and value.startswith("attach://") and value[9:] in files:
                out[key] = upload(value[9:])
            elif key == "media" and isinstance(value, dict):
                media = value.get("media")
                if isinstance(media, str) and media.startswith("attach://") and media[9:] in files:
                    out[key] = {**value, "media": upload(media[9:])}
                else:
                    out[key] = value
            else:
                out[key] = value
        for name in files:
            if name not in out and f"attach://{name}" not in json.dumps(values, default=str):
                out[name] = upload(name)
        return out

    # ------------------------------------------------------------------ shared validation

    def _chat_user(self, bot: FakeBot, p: Params, *, initiating: bool = True) -> FakeUser:
        chat_id = p.get("chat_id")
        if chat_id is None:
            raise bad_request("chat_id is empty")
        user: FakeUser | None
        if isinstance(chat_id, str) and chat_id.startswith("@"):
            user = next((u for u in self.users.values() if u.username == chat_id[1:]), None)
        elif isinstance(chat_id, int):
            user = self.users.get(chat_id)
        else:
            user = None
        if user is None:
            raise bad_request("chat not found")
        if bot.id in user.blocked_by:
            raise APIError(403, "Forbidden: bot was blocked by the user")
        if initiating and not user.started:
            raise APIError(403, "Forbidden: bot can't initiate conversation with a user")
        return user

    @staticmethod
    def _format(
        text: str, parse_mode: str | None, entities: Any
    ) -> tuple[str, list[dict[str, Any]] | None]:
        if parse_mode and parse_mode.lower() == "html":
            try:
                plain, parsed = parse_html(text)
            except EntityParseError as err:
                raise bad_request(f"can't parse entities: {err}") from None
            return plain, parsed or None
        if parse_mode and parse_mode.lower() not in ("markdown", "markdownv2"):
            raise bad_request(f"unsupported parse_mode {parse_mode}")
        return text, entities or None

    def _text(self, p: Params) -> tuple[str, list[dict[str, Any]] | None]:
        raw = p.get_str("text", required=True, empty="message text is empty") or ""
        text, entities = self._format(raw, p.get_str("parse_mode"), p.get_json("entities"))
        if not text.strip():
            raise bad_request("message text is empty")
        if len(text) > 4096:
            raise bad_request("message is too long")
        return text, entities

    def _caption(
        self, raw: str | None, parse_mode: str | None, entities: Any
    ) -> tuple[str | None, list[dict[str, Any]] | None]:
        if raw is None or raw == "":
            return None, None
        caption, parsed = self._format(raw, parse_mode, entities)
        if len(caption) > 1024:
            raise bad_request("message caption is too long")
        return caption, parsed

    @staticmethod
    def _validate_inline_keyboard(markup: Any) -> dict[str, Any]:
        rows = markup.get("inline_keyboard") if isinstance(markup, dict) else None
        if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
            raise bad_request(
                'field "inline_keyboard" of the InlineKeyboardMarkup must be an Array'
            )
        for row in rows:
            for button in row:
                if not isinstance(button, dict) or not button.get("text"):
                    raise bad_request("BUTTON_TEXT_INVALID")
                actions = [a for a in BUTTON_ACTIONS if a in button]
                if not actions:
                    raise bad_request("text buttons are unallowed in the inline keyboard")
                if "callback_data" in button:
                    size = len(str(button["callback_data"]).encode())
                    if not 1 <= size <= 64:
                        raise bad_request("BUTTON_DATA_INVALID")
                url = button.get("url")
                if url is not None and not re.match(r"^(https?|tg)://\S+$", str(url)):
                    raise bad_request(
                        f"inline keyboard button URL '{url}' is invalid: Wrong HTTP URL"
                    )
        return markup  # type: ignore[no-any-return]

    def _markup(self, p: Params) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """(inline keyboard echoed in the message, reply keyboard kept aside) of a send."""
        markup = p.get_json("reply_markup")
        if markup is None:
            return None, None
        if not isinstance(markup, dict):
            raise bad_request("can't parse reply keyboard markup JSON object")
        if "inline_keyboard" in markup:
            return self._validate_inline_keyboard(markup), None
        return None, markup

    def _edit_markup(self, p: Params) -> dict[str, Any] | None:
        markup = p.get_json("reply_markup")
        if markup is None:
            return None
        if not isinstance(markup, dict) or "inline_keyboard" not in markup:
            raise bad_request("inline keyboard expected")
        return self._validate_inline_keyboard(markup)

    def _valid_file(self, bot: FakeBot, file_id: str) -> StoredFile:
        stored = self.files.get(file_id)
        if stored is None or stored.forgotten or stored.bot_id != bot.id:
            raise bad_request(WRONG_FILE)
        return stored

    def _new_upload(
        self,
        bot: FakeBot,
        *,
        data: bytes | None,
        filename: str | None,
        source_url: str | None = None,
    ) -> list[dict[str, Any]]:
        width, height = _image_size(data) if data else (800, 800)
        group = secrets.token_hex(8)
        ext = (filename or "photo.jpg").rsplit(".", 1)[-1].lower() if filename else "jpg"
        if not re.fullmatch(r"[a-z0-9]{1,5}", ext):
            ext = "jpg"
        dims = _photo_dims(width, height)
        top_area = dims[-1][0] * dims[-1][1]
        total = len(data) if data else 50_000
        sizes: list[StoredFile] = []
        for w, h in dims:
            seq = next(self._file_seq)
            stored = StoredFile(
                file_id=f"AgACAgIAAxkBAAI{secrets.token_urlsafe(48)}",
                file_unique_id=f"AQAD{secrets.token_urlsafe(12)}",
                bot_id=bot.id,
                group=group,
                width=w,
                height=h,
                file_size=max(1, total * w * h // top_area),
                file_path=f"photos/file_{seq}.{ext}",
                data=data,
                filename=filename,
                source_url=source_url,
            )
            self.files[stored.file_id] = stored
            sizes.append(stored)
        self.file_groups[group] = sizes
        if data is not None:
            self._uploads[bot.id] += 1
        return [s.photo_size() for s in sizes]

    def _photo(
        self, bot: FakeBot, value: Any, files: dict[str, FilePart], field: str
    ) -> tuple[list[dict[str, Any]], bool]:
        """Resolve a photo argument into PhotoSizes; second item: was it a file_id re-use."""
        if value is None and field in files:
            value = f"attach://{field}"
        if not isinstance(value, str) or not value:
            raise bad_request("there is no photo in the request")
        if value.startswith("attach://"):
            part = files.get(value[len("attach://") :])
            if part is None:
                raise bad_request(WRONG_FILE)
            filename, data = part
            if not data:
                raise bad_request("file must be non-empty")
            return self._new_upload(bot, data=data, filename=filename), False
        if re.match(r"^https?://\S+$", value):
            return self._new_upload(bot, data=None, filename=None, source_url=value), False
        stored = self._valid_file(bot, value)
        return [s.photo_size() for s in self.file_groups[stored.group]], True

    def _new_message(
        self, bot: FakeBot, user: FakeUser, *, outgoing: bool, **fields: Any
    ) -> StoredMessage:
        key = (bot.id, user.id)
        self._message_ids[key] += 1
        msg = StoredMessage(
            bot_id=bot.id,
            chat_id=user.id,
            message_id=self._message_ids[key],
            date=int(time.time()),
            outgoing=outgoing,
            **fields,
        )
        self.chats[key].append(msg)
        return msg

    def _reply_to(self, bot: FakeBot, user: FakeUser, p: Params) -> int | None:
        params = p.get_json("reply_parameters") or {}
        target = params.get("message_id") if isinstance(params, dict) else None
        target = target or p.get_int("reply_to_message_id")
        if not target:
            return None
        msg = self.message(user.id, int(target), bot_id=bot.id)
        if msg is None or msg.deleted:
            allow = p.get_bool("allow_sending_without_reply") or (
                isinstance(params, dict) and params.get("allow_sending_without_reply")
            )
            if allow:
                return None
            raise bad_request("message to be replied not found")
        return int(target)

    def _sent(self, msg: StoredMessage) -> dict[str, Any]:
        data = self.message_to_api(msg)
        # A reply keyboard / ForceReply is not part of the Message JSON, but a client shows it.
        self._emit(
            "message_sent",
            bot_id=msg.bot_id,
            chat_id=msg.chat_id,
            message=data,
            reply_keyboard=msg.reply_keyboard,
        )
        return data

    def _chat_message(self, bot: FakeBot, p: Params, not_found: str) -> StoredMessage:
        """The live message (chat_id, message_id) of ``p`` in this bot's chat, or 400."""
        user = self._chat_user(bot, p, initiating=False)
        message_id = p.get_int("message_id")
        if message_id is None:
            raise bad_request("message identifier is not specified")
        msg = self.message(user.id, message_id, bot_id=bot.id)
        if msg is None or msg.deleted:
            raise bad_request(not_found)
        return msg

    def _edit_target(self, bot: FakeBot, p: Params) -> StoredMessage:
        inline_id = p.get_str("inline_message_id")
        if inline_id is not None:
            msg = self.inline_messages.get(inline_id)
            if msg is None or msg.bot_id != bot.id:
                raise bad_request("MESSAGE_ID_INVALID")
            return msg
        msg = self._chat_message(bot, p, "message to edit not found")
        if not msg.outgoing:
            raise bad_request("message can't be edited")
        return msg

    def _edited(self, msg: StoredMessage) -> dict[str, Any] | bool:
        msg.edit_date = int(time.time())
        if msg.message_id == 0:  # inline message: Telegram answers True
            self._emit("message_edited", bot_id=msg.bot_id, chat_id=msg.chat_id, message=None)
            return True
        data = self.message_to_api(msg)
        self._emit("message_edited", bot_id=msg.bot_id, chat_id=msg.chat_id, message=data)
        return data

    # ------------------------------------------------------------------ Bot API methods
    # Each ``_m_<lowercased method>`` takes (bot, params) and returns the JSON "result".

    async def _m_getme(self, bot: FakeBot, p: Params) -> dict[str, Any]:
        return bot.get_me()

    async def _m_logout(self, bot: FakeBot, p: Params) -> bool:
        return True

    async def _m_close(self, bot: FakeBot, p: Params) -> bool:
        return True

    async def _m_deletewebhook(self, bot: FakeBot, p: Params) -> bool:
        bot.webhook_url, bot.webhook_secret = "", None
        if p.get_bool("drop_pending_updates"):
            bot.updates.clear()
        self._webhook_changed(bot)
        return True

    async def _m_setwebhook(self, bot: FakeBot, p: Params) -> bool:
        url = p.get_str("url") or ""
        if url:
            parts = urllib.parse.urlsplit(url)
            if parts.scheme not in ("https", "http") or not parts.hostname:
                raise bad_request("bad webhook: Invalid URL specified")
            if parts.scheme != "https" and parts.hostname not in LOOPBACK_HOSTS:
                raise bad_request("bad webhook: An HTTPS URL must be provided for webhook")
        secret = p.get_str("secret_token")
        if secret is not None and secret != "" and not WEBHOOK_SECRET_RE.match(secret):
            raise bad_request("secret token contains unallowed characters")
        max_connections = p.get_int("max_connections", default=40) or 40
        if not 1 <= max_connections <= 100:
            raise bad_request("bad webhook: max_connections must be between 1 and 100")
        allowed = p.get_json("allowed_updates")
        if isinstance(allowed, list):
            bot.allowed_updates = [str(a) for a in allowed] or None
        bot.webhook_url = url
        bot.webhook_secret = secret or None
        bot.webhook_max_connections = max_connections
        bot.webhook_last_error_date = bot.webhook_last_error_message = None
        if p.get_bool("drop_pending_updates"):
            bot.updates.clear()
        if bot.active_poll is not None and not bot.active_poll.done():
            bot.active_poll.set_exception(
                APIError(409, "Conflict: terminated by setWebhook request")
            )
        self._webhook_changed(bot)
        return True

    async def _m_getwebhookinfo(self, bot: FakeBot, p: Params) -> dict[str, Any]:
        info: dict[str, Any] = {
            "url": bot.webhook_url,
            "has_custom_certificate": False,
            "pending_update_count": len(bot.updates),
        }
        if bot.webhook_url:
            info["max_connections"] = bot.webhook_max_connections
            info["ip_address"] = "127.0.0.1"
            if bot.allowed_updates:
                info["allowed_updates"] = list(bot.allowed_updates)
            if bot.webhook_last_error_date is not None:
                info["last_error_date"] = bot.webhook_last_error_date
                info["last_error_message"] = bot.webhook_last_error_message
        return info

    def _deliverable(self, bot: FakeBot, limit: int) -> list[dict[str, Any]]:
        allowed = set(bot.allowed_updates) if bot.allowed_updates else None
        batch: list[dict[str, Any]] = []
        for update in list(bot.updates):
            kinds = [k for k in update if k != "update_id"]
            kind = kinds[0] if kinds else ""
            ok = kind in allowed if allowed is not None else kind not in NOT_DEFAULT_UPDATES
            if not ok:
                bot.updates.remove(update)  # Telegram never stores updates the bot opted out of
                continue
            batch.append(update)
            if len(batch) >= limit:
                break
        return batch

    async def _m_getupdates(self, bot: FakeBot, p: Params) -> list[dict[str, Any]]:
        if bot.webhook_url:
            raise APIError(409, WEBHOOK_CONFLICT)
        offset = p.get_int("offset")
        limit = min(100, max(1, p.get_int("limit", default=100) or 100))
        timeout = max(0, p.get_int("timeout", default=0) or 0)
        allowed = p.get_json("allowed_updates")
        if isinstance(allowed, list):
            bot.allowed_updates = [str(a) for a in allowed] or None
        if offset:
            if offset > 0:
                while bot.updates and int(bot.updates[0]["update_id"]) < offset:
                    bot.updates.popleft()
            else:
                while len(bot.updates) > -offset:
                    bot.updates.popleft()
        if bot.active_poll is not None and not bot.active_poll.done():
            if self.conflict_policy == "reject_new":
                raise APIError(409, POLL_CONFLICT)
            bot.active_poll.set_exception(APIError(409, POLL_CONFLICT))
        loop = asyncio.get_running_loop()
        me: asyncio.Future[None] = loop.create_future()
        bot.active_poll = me
        deadline = loop.time() + timeout
        try:
            while True:
                batch = self._deliverable(bot, limit)
                remaining = deadline - loop.time()
                if batch or remaining <= 0:
                    return batch
                waiter: asyncio.Future[Any] = asyncio.ensure_future(bot.wakeup.wait())
                watched: set[asyncio.Future[Any]] = {waiter, me}
                try:
                    await asyncio.wait(watched, timeout=remaining, return_when=FIRST_COMPLETED)
                finally:
                    waiter.cancel()
                if me.done():  # terminated by a newer request, or the server is stopping
                    exc = me.exception()
                    if exc is not None:
                        raise exc
                    return self._deliverable(bot, limit)
        finally:
            if bot.active_poll is me:
                bot.active_poll = None
            if not me.done():
                me.set_result(None)

    @staticmethod
    def _scope_key(p: Params) -> tuple[str, str]:
        scope = p.get_json("scope") or {"type": "default"}
        return json.dumps(scope, sort_keys=True), p.get_str("language_code") or ""

    async def _m_setmycommands(self, bot: FakeBot, p: Params) -> bool:
        commands = p.get_json("commands")
        if not isinstance(commands, list):
            raise bad_request("commands is empty")
        if len(commands) > 100:
            raise bad_request("too many commands")
        for cmd in commands:
            if not isinstance(cmd, dict) or not BOT_COMMAND_NAME_RE.match(
                str(cmd.get("command", ""))
            ):
                raise bad_request("BOT_COMMAND_INVALID")
            if not 1 <= len(str(cmd.get("description", ""))) <= 256:
                raise bad_request("BOT_COMMAND_DESCRIPTION_INVALID")
        bot.commands[self._scope_key(p)] = [
            {"command": c["command"], "description": c["description"]} for c in commands
        ]
        return True

    async def _m_getmycommands(self, bot: FakeBot, p: Params) -> list[dict[str, Any]]:
        return list(bot.commands.get(self._scope_key(p), []))

    async def _m_deletemycommands(self, bot: FakeBot, p: Params) -> bool:
        bot.commands.pop(self._scope_key(p), None)
        return True

    async def _m_setmydescription(self, bot: FakeBot, p: Params) -> bool:
        if len(p.get_str("description") or "") > 512:
            raise bad_request("description is too long")
        return True

    async def _m_setmyshortdescription(self, bot: FakeBot, p: Params) -> bool:
        if len(p.get_str("short_description") or "") > 120:
            raise bad_request("short description is too long")
        return True

    async def _m_setchatmenubutton(self, bot: FakeBot, p: Params) -> bool:
        return True

    async def _m_sendmessage(self, bot: FakeBot, p: Params) -> dict[str, Any]:
        user = self._chat_user(bot, p)
        text, entities = self._text(p)
        inline, keyboard = self._markup(p)
        reply_to = self._reply_to(bot, user, p)
        msg = self._new_message(
            bot,
            user,
            outgoing=True,
            text=text,
            entities=entities,
            reply_markup=inline,
            reply_keyboard=keyboard,
            reply_to_message_id=reply_to,
        )
        return self._sent(msg)

    async def _m_sendphoto(self, bot: FakeBot, p: Params) -> dict[str, Any]:
        user = self._chat_user(bot, p)
        caption, caption_entities = self._caption(
            p.get_str("caption"), p.get_str("parse_mode"), p.get_json("caption_entities")
        )
        inline, keyboard = self._markup(p)
        reply_to = self._reply_to(bot, user, p)
        photo, reused = self._photo(bot, p.get("photo"), p.files, "photo")
        if reused:
            self._file_id_sends[bot.id] += 1
        msg = self._new_message(
            bot,
            user,
            outgoing=True,
            photo=photo,
            caption=caption,
            caption_entities=caption_entities,
            reply_markup=inline,
            reply_keyboard=keyboard,
            reply_to_message_id=reply_to,
            has_spoiler=p.get_bool("has_spoiler"),
        )
        return self._sent(msg)

    async def _m_editmessagetext(self, bot: FakeBot, p: Params) -> dict[str, Any] | bool:
        msg = self._edit_target(bot, p)
        text, entities = self._text(p)
        markup = self._edit_markup(p)
        if msg.text is None:
            raise bad_request("there is no text in the message to edit")
        if msg.text == text and msg.entities == entities and msg.reply_markup == markup:
            raise bad_request(NOT_MODIFIED)
        msg.text, msg.entities, msg.reply_markup = text, entities, markup
        return self._edited(msg)

    async def _m_editmessagecaption(self, bot: FakeBot, p: Params) -> dict[str, Any] | bool:
        msg = self._edit_target(bot, p)
        caption, entities = self._caption(
            p.get_str("caption"), p.get_str("parse_mode"), p.get_json("caption_entities")
        )
        markup = self._edit_markup(p)
        if msg.photo is None and msg.message_id != 0:
            raise bad_request("there is no caption in the message to edit")
        if (
            msg.caption == caption
            and msg.caption_entities == entities
            and msg.reply_markup == markup
        ):
            raise bad_request(NOT_MODIFIED)
        msg.caption, msg.caption_entities, msg.reply_markup = caption, entities, markup
        return self._edited(msg)

    async def _m_editmessagemedia(self, bot: FakeBot, p: Params) -> dict[str, Any] | bool:
        msg = self._edit_target(bot, p)
        media = p.get_json("media")
        if not isinstance(media, dict):
            raise bad_request("can't parse InputMedia: media is not an object")
        if media.get("type") != "photo":
            raise bad_request(f"media type {media.get('type')!r} is not supported by the double")
        caption, entities = self._caption(
            media.get("caption"), media.get("parse_mode"), media.get("caption_entities")
        )
        markup = self._edit_markup(p)
        if msg.photo is None and msg.message_id != 0:
            raise bad_request("there is no media in the message to edit")
        photo, reused = self._photo(bot, media.get("media"), p.files, "media")
        same_photo = (
            msg.photo is not None and msg.photo[-1]["file_unique_id"] == photo[-1]["file_unique_id"]
        )
        if (
            same_photo
            and msg.caption == caption
            and msg.caption_entities == entities
            and msg.reply_markup == markup
        ):
            raise bad_request(NOT_MODIFIED)
        if reused:
            self._file_id_sends[bot.id] += 1
        msg.photo, msg.caption, msg.caption_entities = photo, caption, entities
        msg.reply_markup, msg.has_spoiler = markup, bool(media.get("has_spoiler"))
        return self._edited(msg)

    async def _m_editmessagereplymarkup(self, bot: FakeBot, p: Params) -> dict[str, Any] | bool:
        msg = self._edit_target(bot, p)
        markup = self._edit_markup(p)
        if msg.reply_markup == markup:
            raise bad_request(NOT_MODIFIED)
        msg.reply_markup = markup
        return self._edited(msg)

    async def _m_deletemessage(self, bot: FakeBot, p: Params) -> bool:
        msg = self._chat_message(bot, p, "message to delete not found")
        msg.deleted = True
        self._emit(
            "message_deleted",
            bot_id=bot.id,
            chat_id=msg.chat_id,
            message_id=msg.message_id,
            by="bot",
        )
        return True

    async def _m_answercallbackquery(self, bot: FakeBot, p: Params) -> bool:
        query_id = p.get_str("callback_query_id") or ""
        query = self.callback_queries.get(query_id)
        if query is None or query["bot_id"] != bot.id or query["answered"]:
            raise bad_request(QUERY_TOO_OLD)
        text = p.get_str("text")
        if text is not None and len(text) > 200:
            raise bad_request("MESSAGE_TOO_LONG")
        query["answered"] = True
        answer = {
            "callback_query_id": query_id,
            "bot_id": bot.id,
            "user_id": query["user_id"],
            "message_id": query["message_id"],
            "data": query["data"],
            "text": text,
            "show_alert": p.get_bool("show_alert"),
            "url": p.get_str("url"),
            "cache_time": p.get_int("cache_time", default=0),
        }
        self.callback_answers.append(answer)
        self._emit("callback_answered", chat_id=query["user_id"], **answer)
        return True

    def _validate_inline_result(self, bot: FakeBot, result: Any) -> None:
        if not isinstance(result, dict) or not result.get("id") or not result.get("type"):
            raise bad_request("RESULT_ID_INVALID")
        if len(str(result["id"]).encode()) > 64:
            raise bad_request("RESULT_ID_INVALID")
        if result["type"] == "photo":
            if "photo_file_id" in result:
                self._valid_file(bot, str(result["photo_file_id"]))
            elif not re.match(r"^https?://\S+$", str(result.get("photo_url", ""))):
                raise bad_request(WRONG_FILE)
        if result.get("caption") is not None:
            self._caption(
                result["caption"], result.get("parse_mode"), result.get("caption_entities")
            )
        content = result.get("input_message_content")
        if isinstance(content, dict) and "message_text" in content:
            text, _ = self._format(
                str(content["message_text"]), content.get("parse_mode"), content.get("entities")
            )
            if len(text) > 4096:
                raise bad_request("MESSAGE_TOO_LONG")
        if result.get("reply_markup") is not None:
            self._validate_inline_keyboard(result["reply_markup"])

    async def _m_answerinlinequery(self, bot: FakeBot, p: Params) -> bool:
        query_id = p.get_str("inline_query_id") or ""
        query = self.inline_queries.get(query_id)
        if query is None or query["bot_id"] != bot.id or query["answered"]:
            raise bad_request(QUERY_TOO_OLD)
        results = p.get_json("results")
        if not isinstance(results, list):
            raise bad_request("results is empty")
        if len(results) > 50:
            raise bad_request("RESULTS_TOO_MUCH")
        ids = [str(r.get("id")) for r in results if isinstance(r, dict)]
        if len(ids) != len(set(ids)):
            raise bad_request("RESULT_ID_DUPLICATE")
        for result in results:
            self._validate_inline_result(bot, result)
        query["answered"] = True
        answer = {
            "inline_query_id": query_id,
            "bot_id": bot.id,
            "user_id": query["user_id"],
            "query": query["query"],
            "results": results,
            "cache_time": p.get_int("cache_time", default=300),
            "is_personal": p.get_bool("is_personal"),
            "next_offset": p.get_str("next_offset") or "",
            "button": p.get_json("button"),
        }
        self.inline_answers.append(answer)
        self._emit("inline_answered", chat_id=query["user_id"], **answer)
        return True

    async def _m_sendchataction(self, bot: FakeBot, p: Params) -> bool:
        user = self._chat_user(bot, p)
        action = p.get_str("action")
        if action not in CHAT_ACTIONS:
            raise bad_request("wrong parameter action in request")
        record = {"bot_id": bot.id, "chat_id": user.id, "action": action, "at": time.monotonic()}
        self.chat_actions.append(record)
        self._emit("chat_action", **record)
        return True

    async def _m_getfile(self, bot: FakeBot, p: Params) -> dict[str, Any]:
        file_id = p.get_str("file_id") or ""
        stored = self.files.get(file_id)
        if stored is None or stored.forgotten or stored.bot_id != bot.id:
            raise bad_request("invalid file_id")
        return {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": stored.file_size,
            "file_path": stored.file_path,
        }
