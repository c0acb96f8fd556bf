"""The seeds' way, as a baseline: a plain aiogram bot whose data layer is Postgres only.

Per ``/today`` update, as the original horoscope bot did (seeds 000-003): a DB session per
update (commit on success, rollback on error), a read of the user and an UPDATE of its
``last_seen_at``, a read of today's horoscope (cached in Postgres), and the view counter
upsert (``INSERT ... ON CONFLICT DO UPDATE SET view_count = view_count + 1``). Same tables,
same texts, keyboard and picture as the real bot, so only the data layer differs.

The picture is sent by a file_id the baseline keeps in memory: the seed also read it from
Postgres per send, which this baseline leaves out (in the baseline's favour).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any
from zoneinfo import ZoneInfo

from aiogram import BaseMiddleware, Bot, Dispatcher, Router
from aiogram.filters import Command
from aiogram.types import Message, TelegramObject
from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.telegram.callbacks import Day
from bot.telegram.keyboards import horoscope_keyboard
from bot.telegram.texts import choose_lang, horoscope_parts, texts
from db.models import Horoscope, HoroscopeView, User
from db.types import Lang, Sign

__all__ = ["build_seed_bot"]


class DbSessionMiddleware(BaseMiddleware):
    """Seed 003: one session per update, commit on success, rollback on error."""

    def __init__(self, session_factory: async_sessionmaker[AsyncSession]) -> None:
        self.session_factory = session_factory

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        async with self.session_factory() as session:
            data["session"] = session
            try:
                result = await handler(event, data)
                await session.commit()
                return result
            except BaseException:
                await session.rollback()
                raise


def build_seed_bot(
    session_factory: async_sessionmaker[AsyncSession],
    file_ids: dict[str, str],
    *,
    tz: str = "Europe/Moscow",
) -> tuple[Dispatcher, dict[str, int]]:
    """A Dispatcher answering /today the seeds' way; ``file_ids``: sign -> file_id.

    Returns the dispatcher and a dict counting handled updates and errors.
    """
    zone = ZoneInfo(tz)
    router = Router(name="seed")
    stats = {"handled": 0, "no_user": 0}

    @router.message(Command("today"))
    async def today(message: Message, bot: Bot, session: AsyncSession) -> None:
        assert message.from_user is not None
        user_id = message.from_user.id
        user = (
            await session.execute(
                select(
                    User.id, User.zodiac_sign, User.lang, User.language_code, User.push_enabled
                ).where(User.id == user_id)
            )
        ).first()
        if user is None or user.zodiac_sign is None:
            stats["no_user"] += 1
            await message.answer("Choose your sign first: /start")
            return
        await session.execute(
            update(User)
            .where(User.id == user_id)
            .values(last_seen_at=func.now())
            .execution_options(synchronize_session=False)
        )
        sign = Sign(user.zodiac_sign)
        lang = choose_lang(user.lang, user.language_code, Lang.RU, (Lang.RU, Lang.EN))
        date = dt.datetime.now(dt.UTC).astimezone(zone).date()
        content = await session.scalar(
            select(Horoscope.content).where(
                Horoscope.zodiac_sign == sign,
                Horoscope.horoscope_date == date,
                Horoscope.lang == lang,
            )
        )
        if content is None:
            raise LookupError(f"no horoscope for {sign} {date} {lang}")
        ins = insert(HoroscopeView).values(zodiac_sign=sign, view_date=date, view_count=1)
        await session.execute(
            ins.on_conflict_do_update(
                index_elements=[HoroscopeView.zodiac_sign, HoroscopeView.view_date],
                set_={"view_count": HoroscopeView.view_count + 1, "updated_at": func.now()},
            )
        )
        t = texts(lang)
        caption, follow_up = horoscope_parts(sign, date, t.today, content, lang)
        keyboard = horoscope_keyboard(lang, sign, Day.TODAY, bool(user.push_enabled))
        photo = file_ids[sign.value]
        if follow_up is None:
            await bot.send_photo(message.chat.id, photo, caption=caption, reply_markup=keyboard)
        else:
            await bot.send_photo(message.chat.id, photo, caption=caption)
            await bot.send_message(message.chat.id, follow_up, reply_markup=keyboard)
        stats["handled"] += 1

    dp = Dispatcher(disable_fsm=True)
    dp.update.outer_middleware(DbSessionMiddleware(session_factory))
    dp.include_router(router)
    return dp, stats
