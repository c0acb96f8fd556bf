"""Showing a horoscope to a person: which date, which text, which picture, one round trip.

The warm path of /today is the bot's hottest path, so its reads are batched: the horoscope
text, the sign picture's file_id and the view counter (HINCRBY) go to Redis as ONE pipeline
(`CacheAside.load_many` = MGET + side commands). With the user lookup done by the middleware,
a warm /today costs two Redis round trips and no SQL.

Only requests of a person count as views (`count_view=True` here); the push and precompute
jobs read through the repository with `count_view=False`. And only a horoscope that reached the
person: the view is counted in the read's round trip (no extra trip on the hot path) and taken
back (-1) when the send then surely failed (a blocked bot, a rejected request).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog
from aiogram import Bot
from aiogram.exceptions import TelegramAPIError, TelegramNetworkError, TelegramServerError
from aiogram.types import InlineKeyboardMarkup, Message

from bot.config import Settings
from bot.domain.clock import Clock, local_date
from bot.domain.generation.template import TemplateGenerator
from bot.domain.services.images import ImageSender, RepositoryFileIds, SentPhoto
from bot.telegram.api import is_harmless, is_not_modified, with_retry
from bot.telegram.callbacks import Day
from bot.telegram.keyboards import horoscope_keyboard
from bot.telegram.texts import choose_lang, horoscope_parts, texts
from cache import CacheAside, Load
from db.repositories.context import DataContext
from db.repositories.horoscopes import HoroscopeRepository
from db.repositories.values import FileRef, HoroscopeData, UserData
from db.repositories.views import HoroscopeViewRepository, ViewTicket
from db.types import HoroscopeGenerator, Lang, Sign

__all__ = ["HoroscopeService", "Prepared", "sign_asset"]

log = structlog.get_logger(__name__)

T = TypeVar("T")


def surely_not_delivered(exc: BaseException) -> bool:
    """Telegram refused the request (blocked, bad request, 429...): nothing was shown. A
    network error or a 5xx may come after Telegram delivered, so they do not count."""
    return isinstance(exc, TelegramAPIError) and not isinstance(
        exc, TelegramNetworkError | TelegramServerError
    )


def sign_asset(sign: Sign) -> str:
    """The picture of a sign, as an asset key under assets/images/.

    The one place that names it: the handlers, inline mode and the push job (jobs.push) all
    call this, so the file_id they cache and send is always the same asset's.
    """
    return f"signs/{sign.value}.jpg"


@dataclass(frozen=True, slots=True)
class Prepared:
    """Everything needed to show one horoscope, read in one round trip."""

    sign: Sign
    date: dt.date
    day: Day
    lang: Lang
    horoscope: HoroscopeData
    file_ref: FileRef | None
    caption: str
    follow_up: str | None
    keyboard: InlineKeyboardMarkup
    view: ViewTicket | None = None

    @property
    def asset(self) -> str:
        return sign_asset(self.sign)


class HoroscopeService:
    def __init__(
        self,
        settings: Settings,
        data: DataContext,
        generator: HoroscopeGenerator,
        images: ImageSender,
        file_ids: RepositoryFileIds,
        clock: Clock,
    ) -> None:
        self.settings = settings
        self.data = data
        self.cache: CacheAside = data.cache
        # A person waits at most HOROSCOPE_DEADLINE for the generator, then gets the built-in
        # text while the generation finishes in the background (db/repositories/horoscopes.py).
        self.repo = HoroscopeRepository(
            data, generator, deadline=settings.horoscope_deadline, stand_in=TemplateGenerator()
        )
        self.views = HoroscopeViewRepository(data)
        self.images = images
        self.file_ids = file_ids
        self.clock = clock

    # ------------------------------------------------------------------ dates and language

    def lang_for(self, user: UserData | None, language_code: str | None = None) -> Lang:
        s = self.settings
        if user is None:
            return choose_lang(None, language_code, s.default_lang, s.enabled_langs)
        return choose_lang(user.lang, user.language_code, s.default_lang, s.enabled_langs)

    def today(self, user: UserData | None) -> dt.date:
        """Today in the user's zone (NULL zone = BOT_TIMEZONE), from the injectable clock."""
        zone = user.timezone if user is not None else None
        return local_date(self.clock(), zone, self.settings.bot_timezone)

    def date_for(self, user: UserData | None, day: Day) -> dt.date:
        today = self.today(user)
        return today if day is Day.TODAY else today + dt.timedelta(days=1)

    # ------------------------------------------------------------------ reads

    async def prepare(
        self, bot_id: int, user: UserData, sign: Sign, day: Day, *, count_view: bool
    ) -> Prepared:
        """Text + file_id (+ the view) in one pipeline; generation only on a cold miss."""
        lang = self.lang_for(user)
        date = self.date_for(user, day)
        loads: list[Load[Any]] = [
            self.repo.load_spec(sign, date, lang),
            self.file_ids.load_spec(bot_id, sign_asset(sign)),
        ]
        view = self.views.ticket(sign, date) if count_view else None
        also = [view.command] if view is not None else []
        horoscope, ref = await self.cache.load_many(loads, also=also)
        if not isinstance(horoscope, HoroscopeData):  # a foreign NOT_FOUND: load directly
            horoscope = await self.repo.get_or_generate(sign, date, lang)
        t = texts(lang)
        caption, follow_up = horoscope_parts(
            sign, date, t.today if day is Day.TODAY else t.tomorrow, horoscope.text, lang
        )
        return Prepared(
            sign=sign,
            date=date,
            day=day,
            lang=lang,
            horoscope=horoscope,
            file_ref=ref if isinstance(ref, FileRef) else None,
            caption=caption,
            follow_up=follow_up,
            keyboard=horoscope_keyboard(lang, sign, day, user.push_enabled),
            view=view,
        )

    async def _shown(self, p: Prepared, call: Callable[[], Awaitable[T]]) -> T:
        """``call()`` (the request that shows the horoscope); its view is taken back when
        Telegram surely did not show it."""
        try:
            return await call()
        except Exception as exc:
            if p.view is not None and surely_not_delivered(exc):
                await self.views.take_back(p.view)
            raise

    # ------------------------------------------------------------------ sending

    async def send(
        self, bot: Bot, chat_id: int, user: UserData, sign: Sign, day: Day = Day.TODAY
    ) -> SentPhoto:
        """A new message: the sign's picture with the horoscope (and the text after it when it
        does not fit a caption). Counts a view: only people call this."""
        p = await self.prepare(bot.id, user, sign, day, count_view=True)
        return await self.send_prepared(bot, chat_id, p)

    async def send_prepared(self, bot: Bot, chat_id: int, p: Prepared) -> SentPhoto:
        markup = p.keyboard if p.follow_up is None else None
        sent = await self._shown(
            p,
            lambda: self.images.send_photo(
                bot, chat_id, p.asset, caption=p.caption, reply_markup=markup, known=p.file_ref
            ),
        )
        await self._follow_up(bot, chat_id, p)
        return sent

    async def _follow_up(self, bot: Bot, chat_id: int, p: Prepared) -> None:
        text = p.follow_up
        if text is not None:
            await with_retry(
                lambda: bot.send_message(chat_id, text, reply_markup=p.keyboard),
                what="horoscope_text",
            )

    async def edit(self, bot: Bot, message: Message, user: UserData, sign: Sign, day: Day) -> bool:
        """Show ``day`` in place of what ``message`` shows; False when it was already shown.

        A photo message gets editMessageMedia (new picture and caption; the keyboard moves to
        a follow-up message when the text is too long for a caption), a text message (the
        follow-up of a long horoscope) editMessageText. "message is not modified" means the
        person already sees this: not an error. A message that is gone is sent anew.
        """
        p = await self.prepare(bot.id, user, sign, day, count_view=True)
        chat_id, message_id = message.chat.id, message.message_id
        try:
            if message.photo:
                await self._shown_unless_gone(
                    p,
                    lambda: self.images.edit_photo(
                        bot,
                        p.asset,
                        chat_id=chat_id,
                        message_id=message_id,
                        caption=p.caption,
                        reply_markup=p.keyboard if p.follow_up is None else None,
                        known=p.file_ref,
                    ),
                )
                await self._follow_up(bot, chat_id, p)
            else:
                text = p.follow_up if p.follow_up is not None else p.caption
                await self._shown_unless_gone(
                    p,
                    lambda: with_retry(
                        lambda: bot.edit_message_text(
                            text=text,
                            chat_id=chat_id,
                            message_id=message_id,
                            reply_markup=p.keyboard,
                        ),
                        what="edit_text",
                    ),
                )
        except Exception as exc:
            if is_not_modified(exc):
                return False
            if is_harmless(exc):
                log.info("edit_target_gone", error=str(exc))
                await self.send_prepared(bot, chat_id, p)
                return True
            raise
        return True

    async def _shown_unless_gone(self, p: Prepared, call: Callable[[], Awaitable[Any]]) -> None:
        """An edit: "not modified" (already on screen) keeps the view, a message that is gone
        is sent anew by the caller (which counts it then), anything else refused takes it back."""
        try:
            await call()
        except Exception as exc:
            if is_not_modified(exc) or is_harmless(exc):
                raise
            if p.view is not None and surely_not_delivered(exc):
                await self.views.take_back(p.view)
            raise
