"""Showing a horoscope to a person: which date, which text, which picture, one round trip.

The warm path of /today is the bot's hottest path, so its reads are batched: the horoscope
text, the sign picture's file_id and the view counter (HINCRBY) go to Redis as ONE pipeline
(`CacheAside.load_many` = MGET + side commands). And when the person was seen lately by this
process, that pipeline is not even a trip of its own: the user middleware knows (from a
bounded in-process hint, ``UserHints``) which sign, language and zone the person had, and
sends the MGET and the HINCRBY along the user lookup (``HoroscopeService.prefetch``, cache/
prefetch.py). The hint is only a guess: the authoritative user arrives in that same round
trip, and when it says otherwise (or a key missed) the prefetched reply is not used, its view
is taken back and the ordinary read runs. A warm /today then costs ONE Redis round trip and no
SQL.

Only requests of a person count as views (`count_view=True` here); the push and precompute
jobs read through the repository with `count_view=False`. And only a horoscope that reached the
person: the view is counted in the read's round trip (no extra trip on the hot path) and taken
back (-1) when the send then surely failed (a blocked bot, a rejected request).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, TypeVar

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
from cache import CacheAside, Load, SideCommand
from cache.prefetch import Prefetch, Reads, mget
from db.repositories.context import DataContext
from db.repositories.horoscopes import HoroscopeRepository
from db.repositories.values import FileRef, HoroscopeData, UserData
from db.repositories.views import HoroscopeViewRepository, ViewTicket
from db.types import HoroscopeGenerator, Lang, Sign

__all__ = ["HoroscopeService", "Prefetched", "Prepared", "UserHints", "sign_asset"]

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


#: Users whose hint this process keeps (a few dozen bytes each): the recently active ones.
HINTS_MAX: Final = 65_536

#: Prefetch key sets kept (see HoroscopeService._reads).
_READS_MAX: Final = 512

#: What the hint remembers of a user: the sign (None: not chosen), the language it is shown
#: in, the zone name, and when this process last sent the user's last-seen stamp (epoch s).
Hint = tuple[Sign | None, Lang, str | None, float]


class UserHints:
    """user id -> (sign, language, zone, stamped) of the people seen lately, least recently
    used out.

    A hint, never the truth: it only chooses which keys ride along the user lookup; the user
    read in that same round trip decides whether they are used. ``stamped`` spares the
    last-seen HSET of a person seen again within LAST_SEEN_EVERY (bot/telegram/middlewares/
    user.py).
    """

    __slots__ = ("_hints", "maxsize")

    def __init__(self, maxsize: int = HINTS_MAX) -> None:
        self._hints: dict[int, Hint] = {}
        self.maxsize = maxsize

    def __len__(self) -> int:
        return len(self._hints)

    def get(self, user_id: int) -> Hint | None:
        return self._hints.get(user_id)

    def note(self, user_id: int, hint: Hint | None) -> None:
        """Remember (or, with None, forget) a user's hint, as the most recently used."""
        hints = self._hints
        old = hints.pop(user_id, None)
        if hint is None:
            return
        hints[user_id] = hint
        if old is None and len(hints) > self.maxsize:
            del hints[next(iter(hints))]


class Prefetched:
    """The reads of one horoscope sent along the user lookup, on a hint; see ``prefetch``.

    ``commands`` go into the user lookup's pipeline: the MGET of the text and the file_id, and
    the view's HINCRBY. ``consumed`` is set when ``HoroscopeService.prepare`` took the view
    over (it then owns it: a failed send takes it back); a prefetch nobody consumed (the hint
    was wrong, the update was throttled or went to another handler) must be ``discard``ed,
    which takes its view back.
    """

    __slots__ = ("bot_id", "consumed", "date", "day", "lang", "reads", "sign", "view", "zone")

    def __init__(
        self,
        *,
        bot_id: int,
        sign: Sign,
        date: dt.date,
        day: Day,
        lang: Lang,
        reads: Prefetch,
        view: ViewTicket,
        zone: str | None,
    ) -> None:
        self.zone = zone
        self.bot_id = bot_id
        self.sign = sign
        self.date = date
        self.day = day
        self.lang = lang
        self.reads = reads
        self.view = view
        self.consumed = False

    @property
    def commands(self) -> tuple[SideCommand, ...]:
        return (self.reads.command, self.view.command)


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
        #: sign, language and zone of the people seen lately (see ``prefetch``)
        self.hints = UserHints()
        #: (sign, date, lang, bot id) -> what its prefetch reads, and the MGET (a few days'
        #: worth: 12 signs x languages x today/tomorrow per day; cleared when it grows)
        self._reads: dict[tuple[Sign, dt.date, Lang, int], tuple[Reads, tuple[Any, ...]]] = {}

    # ------------------------------------------------------------------ dates and language

    def lang_for(self, user: UserData | None, language_code: str | None = None) -> Lang:
        s = self.settings
        if user is None:
            return choose_lang(None, language_code, s.default_lang, s.enabled_langs)
        return choose_lang(user.lang, user.language_code, s.default_lang, s.enabled_langs)

    def today(self, user: UserData | None) -> dt.date:
        """Today in the user's zone (NULL zone = BOT_TIMEZONE), from the injectable clock."""
        return self.date_for(user, Day.TODAY)

    def date_for(self, user: UserData | None, day: Day) -> dt.date:
        return self._date_in(user.timezone if user is not None else None, day)

    def _date_in(self, zone: str | None, day: Day) -> dt.date:
        """``day``'s date in ``zone`` (None = BOT_TIMEZONE), from the injectable clock."""
        today = local_date(self.clock(), zone, self.settings.bot_timezone)
        return today if day is Day.TODAY else today + dt.timedelta(days=1)

    def _loads(self, bot_id: int, sign: Sign, date: dt.date, lang: Lang) -> list[Load[Any]]:
        """What showing a horoscope reads: its text and its sign picture's file_id."""
        return [
            self.repo.load_spec(sign, date, lang),
            self.file_ids.load_spec(bot_id, sign_asset(sign)),
        ]

    # ------------------------------------------------------------------ hints

    def note_user(self, user: UserData, stamped: float) -> None:
        """Remember what the next /today of ``user`` will most likely read, and when its
        last-seen stamp was last sent (``stamped``, epoch seconds)."""
        self.hints.note(user.id, (user.zodiac_sign, self.lang_for(user), user.timezone, stamped))

    def prefetch(self, bot_id: int, user_id: int, day: Day) -> Prefetched | None:
        """The reads (and the view) of ``day``'s horoscope for ``user_id`` as the hint has it,
        to send along the user lookup; None without a hint. Only for a person's request: the
        view is counted in that round trip (and taken back if the prefetch is not used)."""
        hint = self.hints.get(user_id)
        if hint is None:
            return None
        sign, lang, zone, _ = hint
        if sign is None:
            return None
        date = self._date_in(zone, day)
        spec = (sign, date, lang, bot_id)
        known = self._reads.get(spec)
        if known is None:
            if len(self._reads) >= _READS_MAX:
                self._reads.clear()
            pairs: Reads = tuple((ld.key, ld.codec) for ld in self._loads(bot_id, sign, date, lang))
            known = self._reads[spec] = (pairs, mget(pairs))
        reads = Prefetch(self.cache, known[0], known[1])
        return Prefetched(
            bot_id=bot_id,
            sign=sign,
            date=date,
            day=day,
            lang=lang,
            reads=reads,
            view=self.views.ticket(sign, date),
            zone=zone,
        )

    async def discard(self, prefetched: Prefetched) -> None:
        """A prefetch that was not used: its view was never shown, take it back."""
        if not prefetched.consumed:
            prefetched.consumed = True
            await self.views.take_back(prefetched.view)

    # ------------------------------------------------------------------ reads

    async def prepare(
        self,
        bot_id: int,
        user: UserData,
        sign: Sign,
        day: Day,
        *,
        count_view: bool,
        prefetched: Prefetched | None = None,
    ) -> Prepared:
        """Text + file_id (+ the view) in one pipeline; generation only on a cold miss.

        ``prefetched``: the same reads already sent along the user lookup. Used when it read
        exactly this (sign, date, language, bot) and every key hit; its view is kept when it
        counted this (sign, date), taken back otherwise.
        """
        lang = self.lang_for(user)
        if prefetched is not None and prefetched.day is day and prefetched.zone == user.timezone:
            date = prefetched.date  # "today" in this zone, taken a moment ago for this request
        else:
            date = self.date_for(user, day)
        view: ViewTicket | None = None
        got: list[Any] | None = None
        if prefetched is not None and not prefetched.consumed:
            if prefetched.sign is sign and prefetched.date == date and count_view:
                prefetched.consumed = True
                view = prefetched.view
                if prefetched.lang is lang and prefetched.bot_id == bot_id:
                    got = prefetched.reads.values()
            else:
                await self.discard(prefetched)
        if got is not None:
            horoscope, ref = got
        else:
            also: list[SideCommand] = []
            if count_view and view is None:
                view = self.views.ticket(sign, date)
                also.append(view.command)
            loads = self._loads(bot_id, sign, date, lang)
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
        self,
        bot: Bot,
        chat_id: int,
        user: UserData,
        sign: Sign,
        day: Day = Day.TODAY,
        *,
        prefetched: Prefetched | None = None,
    ) -> SentPhoto:
        """A new message: the sign's picture with the horoscope (and the text after it when it
        does not fit a caption). Counts a view: only people call this. ``prefetched``: the
        reads the user middleware sent along the user lookup (see ``prefetch``)."""
        p = await self.prepare(bot.id, user, sign, day, count_view=True, prefetched=prefetched)
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
