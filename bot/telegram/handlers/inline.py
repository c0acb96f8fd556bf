"""Inline mode: ``@bot leo`` in any chat answers today's horoscopes; a chosen one is a view.

Answers come from one Redis round trip for all matching signs (texts and picture file_ids in one
MGET; a cold text is generated once, single-flighted). A sign whose picture has a known file_id
is offered as a cached photo with the horoscope as caption; otherwise (or when the text is too
long for a caption) as an article. When Telegram refuses a picture's file_id (purged, or issued
to another bot), the same query is answered at once with articles and the pictures' file_ids
are forgotten: a query is never left unanswered. Results depend on who asks: the texts are in
the user's language and for the user's date (their zone), so they are answered
``is_personal=True``: Telegram caches them per user, for ``CACHE_TIME`` seconds.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

import structlog
from aiogram import Bot
from aiogram.enums import ParseMode
from aiogram.exceptions import TelegramBadRequest
from aiogram.types import (
    ChosenInlineResult,
    InlineQuery,
    InlineQueryResultArticle,
    InlineQueryResultCachedPhoto,
    InputTextMessageContent,
)

from bot.domain.services.horoscope import sign_asset
from bot.domain.zodiac import match_signs, sign_label
from bot.ops.metrics import FILE_ID_FALLBACKS
from bot.telegram.api import is_file_id_rejected, is_harmless, with_retry
from bot.telegram.handlers.common import RouterFactory
from bot.telegram.texts import horoscope_parts, texts
from cache import Load
from db.repositories.values import FileRef, HoroscopeData, UserData
from db.types import Lang, Sign

if TYPE_CHECKING:
    from bot.telegram.context import AppContext

__all__ = ["CACHE_TIME", "parse_result_id", "result_id", "router"]

log = structlog.get_logger(__name__)

router = RouterFactory("inline")

#: Seconds Telegram may reuse an answer for the same user and query: texts change once a day,
#: and a language or zone change shows in inline mode at most this late.
CACHE_TIME = 300


def result_id(sign: Sign, date: dt.date, lang: Lang) -> str:
    return f"{sign.value}:{date.isoformat()}:{lang.value}"


def parse_result_id(value: str) -> tuple[Sign, dt.date] | None:
    parts = value.split(":")
    if len(parts) != 3:
        return None
    sign = Sign.parse(parts[0])
    try:
        date = dt.date.fromisoformat(parts[1])
    except ValueError:
        return None
    return (sign, date) if sign is not None else None


def _description(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= 100 else flat[:99].rstrip() + "…"


@router.inline_query()
async def inline_query(
    query: InlineQuery, bot: Bot, app: AppContext, user: UserData | None, lang: Lang
) -> None:
    signs = match_signs(query.query)[:12]
    date = app.horoscopes.today(user)
    t = texts(lang)
    articles: list[InlineQueryResultArticle] = []
    results: list[Any] = []
    photos: dict[str, str] = {}  # asset -> file_id offered in this answer
    if signs:
        loads: list[Load[Any]] = [app.horoscopes.repo.load_spec(s, date, lang) for s in signs]
        loads += [app.file_ids.load_spec(bot.id, sign_asset(s)) for s in signs]
        values = await app.cache.load_many(loads)
        texts_, refs = values[: len(signs)], values[len(signs) :]
        for sign, horoscope, ref in zip(signs, texts_, refs, strict=True):
            if not isinstance(horoscope, HoroscopeData):
                continue
            caption, follow_up = horoscope_parts(sign, date, t.today, horoscope.text, lang)
            rid = result_id(sign, date, lang)
            title = t.inline_article_title.format(sign=sign_label(sign, lang))
            article = InlineQueryResultArticle(
                id=rid,
                title=title,
                description=_description(horoscope.text),
                input_message_content=InputTextMessageContent(
                    message_text=follow_up or caption, parse_mode=ParseMode.HTML
                ),
            )
            articles.append(article)
            asset = sign_asset(sign)
            usable = (
                isinstance(ref, FileRef)
                and app.images.exists(asset)
                and ref.content_sha256 == app.images.sha256(asset)
            )
            if follow_up is None and usable:
                assert isinstance(ref, FileRef)
                photos[asset] = ref.file_id
                results.append(
                    InlineQueryResultCachedPhoto(
                        id=rid,
                        photo_file_id=ref.file_id,
                        title=title,
                        description=_description(horoscope.text),
                        caption=caption,
                        parse_mode=ParseMode.HTML,
                    )
                )
            else:
                results.append(article)
    try:
        await _answer(query, results)
    except TelegramBadRequest as exc:
        if not photos or not is_file_id_rejected(exc):
            raise
        # Telegram does not say which file_id it refused: answer with text now, forget every
        # picture this answer offered (only while it is still the stored file_id), so the
        # next query does not fail again; a later send of a sign uploads its picture anew.
        FILE_ID_FALLBACKS.inc(len(photos))
        log.warning("inline_file_ids_rejected", pictures=len(photos), error=str(exc))
        await _answer(query, articles)
        for asset, file_id in photos.items():
            try:
                await app.file_ids.forget(bot.id, asset, file_id)
            except Exception as err:  # forgetting is best effort: the next answer retries
                log.warning("file_id_forget_failed", asset=asset, error=repr(err))


async def _answer(query: InlineQuery, results: list[Any]) -> None:
    """answerInlineQuery (one 429 waited out); a query already too old is not an error."""
    try:
        await with_retry(
            lambda: query.answer(results, cache_time=CACHE_TIME, is_personal=True),
            what="answer_inline",
        )
    except Exception as exc:
        if not is_harmless(exc):
            raise
        log.debug("inline_answer_late", error=str(exc))


@router.chosen_inline_result()
async def chosen_inline_result(chosen: ChosenInlineResult, app: AppContext) -> None:
    parsed = parse_result_id(chosen.result_id)
    if parsed is None:
        log.info("unknown_inline_result", result_id=chosen.result_id[:64])
        return
    sign, date = parsed
    await app.horoscopes.views.record_view(sign, date)
