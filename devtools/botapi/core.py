"""The double's state and what both of its sides share: bots, users, chats, files, the change
notification that makes ``wait_for`` exact, and injected faults.

The two sides are mixins over this core: ``users.UserSide`` (what a test or the playground does
as a person, and what it inspects) and ``methods.BotSide`` (the Bot API as bots call it over
HTTP); ``state.BotAPIState`` puts them together.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import re
import time
from collections import Counter, defaultdict, deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from devtools.botapi.models import (
    APIError,
    FakeBot,
    FakeUser,
    RecordedCall,
    StoredFile,
    StoredMessage,
    WebhookDelivery,
)
from devtools.botapi.params import Params

__all__ = ["FilePart", "StateCore"]

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


class StateCore:
    """Telegram as seen by bots (the HTTP side) and by users and tests (the Python side).

    ``conflict_policy`` decides what two concurrent getUpdates do: ``"reject_new"`` (default)
    answers the newcomer 409 at once, which is what tests want to assert; ``"terminate_old"``
    is what real Telegram does (the pending request gets the 409, the new one proceeds).
    ``auto_register`` accepts any well-formed token (the playground), otherwise only tokens
    added with :meth:`add_bot` are valid and others get 401.
    """

    if TYPE_CHECKING:
        # Provided by the sides (users.UserSide, methods.BotSide); declared here so each side
        # can call the other through the core it shares.
        def _enqueue(self, bot: FakeBot, kind: str, payload: dict[str, Any]) -> dict[str, Any]: ...
        def message(
            self, chat_id: int, message_id: int, *, bot_id: int | None = None
        ) -> StoredMessage | None: ...
        def message_to_api(
            self, msg: StoredMessage, *, with_reply: bool = True
        ) -> dict[str, Any]: ...
        def _new_message(
            self, bot: FakeBot, user: FakeUser, *, outgoing: bool, **fields: Any
        ) -> StoredMessage: ...

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
