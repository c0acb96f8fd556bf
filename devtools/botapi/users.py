"""The person's side of the double: users write, press buttons, query inline, block the bot;
tests and the playground read chats, calls, uploads and files back."""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

from devtools.botapi.core import (
    COMMAND_RE,
    StateCore,
)
from devtools.botapi.html import utf16_len
from devtools.botapi.models import (
    FakeBot,
    RecordedCall,
    StoredFile,
    StoredMessage,
    chat_instance,
)

__all__ = ["UserSide"]


class UserSide(StateCore):
    """Acting as Telegram's users, and inspecting what bots did."""

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
