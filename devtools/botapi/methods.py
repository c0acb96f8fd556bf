"""The bot's side of the double: one HTTP request in (``handle``), Telegram's validation and
error texts, and the Bot API methods (``_m_<lowercased name>``) bots call."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import secrets
import time
import urllib.parse
from asyncio import FIRST_COMPLETED
from typing import Any

from devtools.botapi.core import (
    BOT_COMMAND_NAME_RE,
    BUTTON_ACTIONS,
    CHAT_ACTIONS,
    LOOPBACK_HOSTS,
    NOT_DEFAULT_UPDATES,
    NOT_MODIFIED,
    POLL_CONFLICT,
    QUERY_TOO_OLD,
    WEBHOOK_CONFLICT,
    WEBHOOK_SECRET_RE,
    WRONG_FILE,
    FilePart,
    StateCore,
    _image_size,
    _photo_dims,
)
from devtools.botapi.html import EntityParseError, parse_html
from devtools.botapi.models import (
    APIError,
    FakeBot,
    FakeUser,
    RecordedCall,
    StoredFile,
    StoredMessage,
    Upload,
    bad_request,
)
from devtools.botapi.params import Params, normalize

__all__ = ["BotSide"]


class BotSide(StateCore):
    """The Bot API as bots see it over HTTP."""

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
