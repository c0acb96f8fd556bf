"""The playground's web routes, added to the Bot API double's own aiohttp application.

One listener serves both sides: the bot polls ``/bot{token}/...`` on it exactly as it would poll
Telegram, and a person's browser gets the chat page, a JSON API that acts as the simulated users
(``send_text``, ``press_button``, ``inline_query``, ``choose_inline_result`` on the double), a
server-sent event stream fed by the double's :meth:`subscribe` queue, and the data-layer figures.
Sharing the double's event loop and state is what lets a click in the browser become an update
in the bot's next long poll with no extra machinery.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from devtools.botapi.models import Upload
from devtools.botapi.server import BOTAPI_KEY, BotAPIServer
from devtools.playground.render import inline_result_view, message_view
from devtools.playground.stats import collect_stats

__all__ = [
    "PLAYGROUND_KEY",
    "PLAYGROUND_USERS",
    "Playground",
    "SimUser",
    "attach",
    "sniff_image_type",
]

STATIC_DIR = Path(__file__).resolve().parent / "static"
SSE_KEEPALIVE_SECONDS = 15.0
#: Bot API methods the activity feed skips: polling and set-up noise, not data-layer work.
QUIET_METHODS = frozenset({"getupdates", "getme", "deletewebhook", "setmycommands", "close"})


@dataclass(frozen=True)
class SimUser:
    """A person the page can act as; ids are fixed so their state survives restarts."""

    id: int
    first_name: str
    language_code: str
    username: str

    @property
    def label(self) -> str:
        return f"{self.first_name} ({self.language_code})"


#: Per-user state (sign, language, push) is the point of switching, so the set is small and
#: mixes both languages the bot speaks.
PLAYGROUND_USERS: tuple[SimUser, ...] = (
    SimUser(700_000_001, "Анна", "ru", "anna_playground"),
    SimUser(700_000_002, "Ben", "en", "ben_playground"),
    SimUser(700_000_003, "Chloé", "en", "chloe_playground"),
)


@dataclass
class Playground:
    """What the routes need besides the double: the users, the metrics registry, and the
    "via @bot" messages (an inline result a user picked is posted in *their* chat by Telegram,
    which the double does not model, so the page's copy is kept here)."""

    server: BotAPIServer
    registries: tuple[CollectorRegistry, ...] = ()
    users: tuple[SimUser, ...] = PLAYGROUND_USERS
    via_messages: dict[int, list[dict[str, Any]]] = field(default_factory=dict)

    def user_ids(self) -> set[int]:
        return {u.id for u in self.users}

    def bot_info(self) -> dict[str, Any]:
        try:
            bot = self.server.bot()
        except LookupError:
            return {"id": None, "username": "bot", "first_name": "Bot"}
        return {"id": bot.id, "username": bot.username, "first_name": bot.first_name}

    def history(self, user_id: int) -> list[dict[str, Any]]:
        messages = [message_view(m) for m in self.server.chat_history(user_id)]
        messages += self.via_messages.get(user_id, [])
        messages.sort(key=lambda m: (m["date"], m.get("seq", m["id"])))
        return messages

    def ui_event(self, event: dict[str, Any]) -> dict[str, Any] | None:
        """A double event → what the page applies, or None when the page does not care."""
        kind = event.get("type")
        chat_id = event.get("chat_id")
        if chat_id not in self.user_ids():
            return None
        if kind in ("message_sent", "message_edited", "user_message"):
            message = event.get("message")
            if message is None:  # an inline message was edited: it is in no chat here
                return None
            if event.get("reply_keyboard") is not None:
                message = {**message, "reply_keyboard": event["reply_keyboard"]}
            view = message_view(message, outgoing=kind != "user_message")
            return {"type": "edit" if kind == "message_edited" else "message", "message": view}
        if kind == "message_deleted":
            return {"type": "delete", "chat_id": chat_id, "message_id": event.get("message_id")}
        if kind == "callback_answered":
            return {
                "type": "toast",
                "chat_id": chat_id,
                "message_id": event.get("message_id"),
                "text": event.get("text"),
                "alert": bool(event.get("show_alert")),
            }
        if kind == "inline_answered":
            return {
                "type": "inline_results",
                "chat_id": chat_id,
                "query_id": event.get("inline_query_id"),
                "query": event.get("query"),
                "results": [inline_result_view(r) for r in event.get("results") or []],
            }
        if kind == "chat_action":
            return {"type": "action", "chat_id": chat_id, "action": event.get("action")}
        return None

    def activity(self, limit: int = 14) -> list[dict[str, Any]]:
        """The latest Bot API calls the bot made, with how each picture travelled."""
        out: list[dict[str, Any]] = []
        for call in reversed(self.server.calls):
            if call.method.lower() in QUIET_METHODS:
                continue
            entry: dict[str, Any] = {"method": call.method, "ok": call.ok}
            photo = call.params.get("photo")
            if photo is None and isinstance(call.params.get("media"), dict):
                photo = call.params["media"].get("media")
                if isinstance(photo, str) and photo.startswith("attach://"):
                    photo = call.params.get(photo[len("attach://") :])
            if isinstance(photo, Upload):
                entry["photo"] = "upload"
                entry["detail"] = f"{photo.filename}, {photo.size // 1024} KB uploaded"
            elif isinstance(photo, str):
                entry["photo"] = "file_id"
                entry["detail"] = "by file_id, no upload"
            if not call.ok:
                entry["detail"] = f"error {call.outcome}"
            out.append(entry)
            if len(out) >= limit:
                break
        return out

    def stats(self) -> dict[str, Any]:
        figures: dict[str, Any] = collect_stats(self.registries) if self.registries else {}
        figures["telegram"] = {
            "uploads": self.server.uploads(),
            "sent_by_file_id": self.server.sent_by_file_id(),
            "calls": sum(1 for c in self.server.calls if c.method.lower() != "getupdates"),
        }
        figures["activity"] = self.activity()
        figures["at"] = time.time()
        return figures


PLAYGROUND_KEY: web.AppKey[Playground] = web.AppKey("playground", Playground)


def sniff_image_type(data: bytes) -> str:
    """Content type from magic bytes: uploads are stored without one."""
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"


# ---------------------------------------------------------------------------- helpers


def _pg(request: web.Request) -> Playground:
    return request.app[PLAYGROUND_KEY]


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise web.HTTPBadRequest(text="expected a JSON object") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="expected a JSON object")
    return body


def _user_id(pg: Playground, value: Any) -> int:
    """Only the simulated users may be acted as: the page is not a general update injector."""
    try:
        user_id = int(value)
    except (TypeError, ValueError):
        raise web.HTTPBadRequest(text="user_id must be a number") from None
    if user_id not in pg.user_ids():
        raise web.HTTPNotFound(text=f"unknown playground user {user_id}")
    return user_id


def _text(body: dict[str, Any], name: str, *, limit: int = 4096, required: bool = True) -> str:
    value = body.get(name, "")
    if not isinstance(value, str) or (required and not value.strip()) or len(value) > limit:
        raise web.HTTPBadRequest(text=f"{name}: expected a non-empty string up to {limit} chars")
    return value


def _no_bot() -> web.HTTPServiceUnavailable:
    return web.HTTPServiceUnavailable(text="the bot has not connected to the local Bot API yet")


# ---------------------------------------------------------------------------- handlers


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


async def info(request: web.Request) -> web.Response:
    pg = _pg(request)
    users = [
        {"id": u.id, "first_name": u.first_name, "lang": u.language_code, "label": u.label}
        for u in pg.users
    ]
    return web.json_response({"bot": pg.bot_info(), "users": users})


async def chat(request: web.Request) -> web.Response:
    pg = _pg(request)
    user_id = _user_id(pg, request.match_info["user_id"])
    return web.json_response({"messages": pg.history(user_id)}, dumps=_dumps)


async def send(request: web.Request) -> web.Response:
    pg = _pg(request)
    body = await _body(request)
    user_id = _user_id(pg, body.get("user_id"))
    text = _text(body, "text")
    reply_to = body.get("reply_to")
    if reply_to is not None and (not isinstance(reply_to, int) or isinstance(reply_to, bool)):
        raise web.HTTPBadRequest(text="reply_to must be a message id")
    try:
        update = pg.server.send_text(user_id, text, reply_to=reply_to)
    except LookupError:
        raise _no_bot() from None
    except ValueError as exc:  # no such message to reply to
        raise web.HTTPBadRequest(text=str(exc)) from None
    return web.json_response({"ok": True, "message_id": update["message"]["message_id"]})


async def press(request: web.Request) -> web.Response:
    pg = _pg(request)
    body = await _body(request)
    user_id = _user_id(pg, body.get("user_id"))
    data = _text(body, "data", limit=64)
    try:
        message_id = int(body.get("message_id", ""))
    except (TypeError, ValueError):
        raise web.HTTPBadRequest(text="message_id must be a number") from None
    try:
        query_id = pg.server.press_button(user_id, message_id, data)
    except LookupError:
        raise _no_bot() from None
    return web.json_response({"ok": True, "callback_query_id": query_id})


async def inline(request: web.Request) -> web.Response:
    pg = _pg(request)
    body = await _body(request)
    user_id = _user_id(pg, body.get("user_id"))
    query = _text(body, "query", limit=256, required=False)
    try:
        query_id = pg.server.inline_query(user_id, query)
    except LookupError:
        raise _no_bot() from None
    return web.json_response({"ok": True, "inline_query_id": query_id})


async def choose(request: web.Request) -> web.Response:
    pg = _pg(request)
    body = await _body(request)
    user_id = _user_id(pg, body.get("user_id"))
    result_id = _text(body, "result_id", limit=64)
    query = _text(body, "query", limit=256, required=False)
    server = pg.server
    try:
        bot = server.bot()
        server.choose_inline_result(user_id, result_id, query)
    except LookupError:
        raise _no_bot() from None
    view: dict[str, Any] | None = None
    for answer in reversed(server.inline_answers):
        if answer["bot_id"] != bot.id or answer["user_id"] != user_id:
            continue
        result = next((r for r in answer["results"] if str(r.get("id")) == result_id), None)
        if result is not None:
            view = _via_message(pg, user_id, inline_result_view(result), bot.username)
            break
    return web.json_response({"ok": True, "message": view}, dumps=_dumps)


def _via_message(
    pg: Playground, user_id: int, result: dict[str, Any], bot_username: str
) -> dict[str, Any]:
    """The message Telegram would post in the user's chat for a chosen inline result."""
    stored = pg.via_messages.setdefault(user_id, [])
    view = {
        "id": -(len(stored) + 1),  # never clashes with the double's positive message ids
        "seq": 10**9 + len(stored),
        "chat_id": user_id,
        "from_bot": False,
        "via": bot_username,
        "date": int(time.time()),
        "edited": False,
        "deleted": False,
        "text": result["text"] if result["photo"] is None else None,
        "caption": result["caption"],
        "photo": result["photo"],
        "buttons": result["buttons"],
        "reply_to": None,
        "force_reply": None,
    }
    stored.append(view)
    return view


async def photo(request: web.Request) -> web.Response:
    server = request.app[BOTAPI_KEY]
    data = server.file_bytes(request.match_info["file_id"])
    if data is None:
        raise web.HTTPNotFound(text="no stored bytes for this file_id")
    return web.Response(
        body=data,
        content_type=sniff_image_type(data),
        headers={"Cache-Control": "private, max-age=3600"},
    )


async def stats(request: web.Request) -> web.Response:
    return web.json_response(_pg(request).stats(), dumps=_dumps)


async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: every chat change of a simulated user, as it happens."""
    pg = _pg(request)
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    queue = pg.server.subscribe()
    try:
        await response.write(b"retry: 1000\n: connected\n\n")
        while True:
            try:
                event = await asyncio.wait_for(queue.get(), SSE_KEEPALIVE_SECONDS)
            except TimeoutError:
                await response.write(b": keep-alive\n\n")
                continue
            ui = pg.ui_event(event)
            if ui is not None:
                await response.write(f"data: {_dumps(ui)}\n\n".encode())
    except (ConnectionResetError, asyncio.CancelledError):
        pass  # the browser went away, or the server is stopping
    finally:
        pg.server.unsubscribe(queue)
    with contextlib.suppress(ConnectionResetError, RuntimeError):
        await response.write_eof()
    return response


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False)


def attach(server: BotAPIServer, registries: Iterable[CollectorRegistry] = ()) -> Playground:
    """Add the playground routes to the double's app (before ``server.start()``)."""
    pg = Playground(server=server, registries=tuple(registries))
    for user in pg.users:
        server.user(
            user.id,
            first_name=user.first_name,
            language_code=user.language_code,
            username=user.username,
        )
    app = server.app
    app[PLAYGROUND_KEY] = pg
    app.router.add_get("/", index)
    app.router.add_get("/playground", index)
    app.router.add_static("/playground/static", STATIC_DIR, append_version=False)
    app.router.add_get("/playground/api/info", info)
    app.router.add_get("/playground/api/chat/{user_id}", chat)
    app.router.add_post("/playground/api/send", send)
    app.router.add_post("/playground/api/press", press)
    app.router.add_post("/playground/api/inline", inline)
    app.router.add_post("/playground/api/choose", choose)
    app.router.add_get("/playground/api/stats", stats)
    app.router.add_get("/playground/api/events", events)
    app.router.add_get("/playground/photo/{file_id}", photo)
    return pg
