"""Every user-facing string in Russian and English, in one typed catalogue.

Why a dataclass rather than gettext or a dict of strings: a missing or misspelt text is an error
at import time (every field must be filled for every language) and in the type checker, not a
KeyError in production. Strings are HTML (the bot's default parse mode) and contain only our own
markup; anything that comes from outside (a first name, a generated horoscope, a time zone a
user typed) is escaped by the helpers below, never pasted raw.
"""

from __future__ import annotations

import datetime as dt
import html
from dataclasses import dataclass
from functools import lru_cache

from bot.domain.zodiac import sign_label
from db.types import Lang, Sign

__all__ = [
    "CAPTION_LIMIT",
    "EN",
    "MESSAGE_LIMIT",
    "RU",
    "TEXTS",
    "Texts",
    "choose_lang",
    "escape",
    "format_date",
    "horoscope_header",
    "horoscope_parts",
    "is_zone_question",
    "texts",
    "visible_header",
    "visible_text",
]

#: Telegram limits, in characters of the text after entity parsing.
CAPTION_LIMIT = 1024
MESSAGE_LIMIT = 4096

# language_code values whose speakers get Russian when they have not chosen (Telegram's
# language_code is the app's language: Ukrainian, Belarusian and Kazakh users mostly read ru).
_RU_FAMILY = frozenset({"ru", "uk", "be", "kk"})


@dataclass(frozen=True, slots=True)
class Texts:
    """The strings of one language. ``{name}``-style fields are filled with escaped values."""

    lang_name: str
    welcome_new: str
    welcome_back: str
    choose_sign: str
    sign_saved: str
    unknown_start_payload: str
    today: str
    tomorrow: str
    btn_today: str
    btn_tomorrow: str
    btn_change_sign: str
    btn_push_on: str
    btn_push_off: str
    btn_back: str
    btn_timezone: str
    need_sign: str
    already_shown: str
    outdated_button: str
    unknown_button: str
    push_now_on: str
    push_now_off: str
    settings: str
    settings_push_on: str
    settings_push_off: str
    tz_choose: str
    tz_saved: str
    tz_unknown: str
    tz_placeholder: str
    lang_saved: str
    hour_saved: str
    hour_usage: str
    help: str
    hint: str
    throttled: str
    error: str
    #: Postgres is unavailable (down, hung, overloaded): nothing the person did wrong
    try_again_later: str
    inline_article_title: str
    months: tuple[str, ...]


RU = Texts(
    lang_name="Русский",
    welcome_new=(
        "✨ Здравствуйте, {name}!\n\n"
        "Я каждый день составляю гороскоп для всех двенадцати знаков. "
        "Выберите свой знак — и звёзды расскажут, чего ждать сегодня."
    ),
    welcome_back="✨ С возвращением, {name}! Ваш знак — {sign}.\n/today — гороскоп на сегодня.",
    choose_sign="Выберите ваш знак зодиака:",
    sign_saved="Ваш знак — {sign}.",
    unknown_start_payload="Такой ссылки я не знаю, но знак можно выбрать ниже.",
    today="сегодня",
    tomorrow="завтра",
    btn_today="Сегодня",
    btn_tomorrow="Завтра",
    btn_change_sign="🔄 Сменить знак",
    btn_push_on="🔔 Рассылка: вкл",
    btn_push_off="🔕 Рассылка: выкл",
    btn_back="← Назад",
    btn_timezone="🌍 Часовой пояс",
    need_sign="Сначала выберите знак зодиака:",
    already_shown="Уже на экране",
    outdated_button="Эта кнопка устарела. Отправляю свежий гороскоп.",
    unknown_button="Эта кнопка больше не работает.",
    push_now_on="🔔 Ежедневная рассылка включена: каждый день в {hour:02d}:00 ({tz}).",
    push_now_off="🔕 Ежедневная рассылка выключена.",
    settings=(
        "<b>Настройки</b>\n\n"
        "Язык: {lang}\n"
        "Часовой пояс: {tz}\n"
        "Рассылка: {push}\n\n"
        "Другой пояс можно прислать названием, например <code>/timezone Europe/Berlin</code>."
    ),
    settings_push_on="каждый день в {hour:02d}:00",
    settings_push_off="выключена",
    tz_choose=(
        "Выберите часовой пояс или пришлите его название по IANA, например "
        "<code>Asia/Tbilisi</code> или <code>/timezone Europe/Berlin</code>."
    ),
    tz_saved="Часовой пояс: {tz}. Сейчас там {time}.",
    tz_unknown=(
        "Не знаю часового пояса «{value}». Нужно название по IANA, например "
        "<code>Europe/Moscow</code> или <code>America/New_York</code>."
    ),
    tz_placeholder="Europe/Moscow",
    lang_saved="Язык: русский.",
    hour_saved="Рассылка будет приходить в {hour:02d}:00 ({tz}).",
    hour_usage="Укажите час от 0 до 23, например <code>/hour 8</code>.",
    help=(
        "<b>Что я умею</b>\n\n"
        "/today — гороскоп на сегодня\n"
        "/tomorrow — гороскоп на завтра\n"
        "/sign — сменить знак\n"
        "/settings — язык, часовой пояс, рассылка\n"
        "/timezone <i>Зона</i> — часовой пояс, например Europe/Berlin\n"
        "/hour <i>час</i> — время рассылки\n"
        "/help — эта справка\n\n"
        "В любом чате наберите <code>@{bot} лев</code> — и поделитесь гороскопом."
    ),
    hint="Не понял вас. /today — гороскоп на сегодня, /sign — сменить знак, /help — справка.",
    throttled="Не так быстро 🙂 Подождите секунду.",
    error="Что-то пошло не так. Попробуйте ещё раз.",
    try_again_later="Сейчас я не могу это сделать: у меня технические неполадки. "
    "Попробуйте через минуту.",
    inline_article_title="{sign} — гороскоп на сегодня",
    months=(
        "января",
        "февраля",
        "марта",
        "апреля",
        "мая",
        "июня",
        "июля",
        "августа",
        "сентября",
        "октября",
        "ноября",
        "декабря",
    ),
)

EN = Texts(
    lang_name="English",
    welcome_new=(
        "✨ Hello, {name}!\n\n"
        "Every day I write a horoscope for all twelve signs. "
        "Pick your sign and the stars will tell you what today holds."
    ),
    welcome_back="✨ Welcome back, {name}! Your sign is {sign}.\n/today — today's horoscope.",
    choose_sign="Choose your zodiac sign:",
    sign_saved="Your sign: {sign}.",
    unknown_start_payload="I don't know that link, but you can pick a sign below.",
    today="today",
    tomorrow="tomorrow",
    btn_today="Today",
    btn_tomorrow="Tomorrow",
    btn_change_sign="🔄 Change sign",
    btn_push_on="🔔 Daily push: on",
    btn_push_off="🔕 Daily push: off",
    btn_back="← Back",
    btn_timezone="🌍 Time zone",
    need_sign="Pick your zodiac sign first:",
    already_shown="Already on screen",
    outdated_button="This button is out of date. Here is a fresh horoscope.",
    unknown_button="This button no longer works.",
    push_now_on="🔔 Daily push is on: every day at {hour:02d}:00 ({tz}).",
    push_now_off="🔕 Daily push is off.",
    settings=(
        "<b>Settings</b>\n\n"
        "Language: {lang}\n"
        "Time zone: {tz}\n"
        "Daily push: {push}\n\n"
        "You can also send a zone name, e.g. <code>/timezone Europe/Berlin</code>."
    ),
    settings_push_on="every day at {hour:02d}:00",
    settings_push_off="off",
    tz_choose=(
        "Pick a time zone or send its IANA name, e.g. <code>Asia/Tbilisi</code> or "
        "<code>/timezone Europe/Berlin</code>."
    ),
    tz_saved="Time zone: {tz}. It is {time} there now.",
    tz_unknown=(
        "I don't know the time zone “{value}”. Send an IANA name such as "
        "<code>Europe/London</code> or <code>America/New_York</code>."
    ),
    tz_placeholder="Europe/London",
    lang_saved="Language: English.",
    hour_saved="Your daily push will arrive at {hour:02d}:00 ({tz}).",
    hour_usage="Give an hour from 0 to 23, e.g. <code>/hour 8</code>.",
    help=(
        "<b>What I can do</b>\n\n"
        "/today — today's horoscope\n"
        "/tomorrow — tomorrow's horoscope\n"
        "/sign — change your sign\n"
        "/settings — language, time zone, daily push\n"
        "/timezone <i>Zone</i> — your time zone, e.g. Europe/Berlin\n"
        "/hour <i>hour</i> — when the daily push arrives\n"
        "/help — this help\n\n"
        "In any chat type <code>@{bot} leo</code> to share a horoscope."
    ),
    hint="I didn't get that. /today — today's horoscope, /sign — change sign, /help — help.",
    throttled="Not so fast 🙂 Give me a second.",
    error="Something went wrong. Please try again.",
    try_again_later="I can't do that right now: I'm having technical trouble. "
    "Please try again in a minute.",
    inline_article_title="{sign} — today's horoscope",
    months=(
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ),
)

TEXTS: dict[Lang, Texts] = {Lang.RU: RU, Lang.EN: EN}


def texts(lang: Lang) -> Texts:
    return TEXTS[lang]


def escape(value: object) -> str:
    """HTML-escape anything that did not come from this catalogue (names, generated text)."""
    return html.escape(str(value), quote=False)


def choose_lang(
    chosen: Lang | str | None,
    language_code: str | None,
    default: Lang,
    enabled: tuple[Lang, ...] | frozenset[Lang] = (Lang.RU, Lang.EN),
) -> Lang:
    """The user's explicit choice, else their Telegram app language, else the bot's default.

    ``language_code`` is an IETF tag ("en-US", "pt-br"); only its primary subtag counts.
    """
    picked = Lang.parse(chosen) if isinstance(chosen, str) else chosen
    if picked is not None and picked in enabled:
        return picked
    if language_code:
        primary = language_code.split("-", 1)[0].split("_", 1)[0].strip().lower()
        guess = Lang.RU if primary in _RU_FAMILY else Lang.parse(primary)
        if guess is not None and guess in enabled:
            return guess
    return default


@lru_cache(maxsize=1)
def _zone_question_starts() -> tuple[str, ...]:
    """How the bot's questions for a time zone start, as a received message shows them."""
    starts = []
    for t in TEXTS.values():
        for question in (t.tz_choose, t.tz_unknown):
            visible = html.unescape(_strip_tags(question.split("{", 1)[0]))
            starts.append(visible[:40])
    return tuple(starts)


def is_zone_question(text: str | None) -> bool:
    """Whether a message of the bot is its question for a time zone (in any language).

    No FSM remembers that the bot asked: a reply to the question's message says it instead.
    """
    return text is not None and text.startswith(_zone_question_starts())


def format_date(date: dt.date, lang: Lang) -> str:
    """ "21 ноября" / "21 November": the day people see in a horoscope header."""
    return f"{date.day} {TEXTS[lang].months[date.month - 1]}"


def horoscope_header(sign: Sign, date: dt.date, day_word: str, lang: Lang) -> str:
    return (
        f"<b>{escape(sign_label(sign, lang))}</b> · {escape(day_word)}, {format_date(date, lang)}"
    )


def visible_header(sign: Sign, date: dt.date, day_word: str, lang: Lang) -> str:
    """The header as Telegram shows it (no markup): what a received caption starts with."""
    return f"{sign_label(sign, lang)} · {day_word}, {format_date(date, lang)}"


def horoscope_parts(
    sign: Sign, date: dt.date, day_word: str, text: str, lang: Lang
) -> tuple[str, str | None]:
    """(caption, follow-up message or None) for a horoscope shown under a picture.

    The generated ``text`` is escaped here, once. When header + text would exceed the
    1024-character caption limit (counted on the visible text, as Telegram does), the caption
    keeps the header only and the whole text follows as a message; a text too long even for a
    message is cut at a word boundary rather than rejected.
    """
    header, visible_len = _header_and_visible_len(sign, date, day_word, lang)
    body = text.strip()
    if visible_len + 2 + len(body) <= CAPTION_LIMIT:
        return f"{header}\n\n{escape(body)}", None
    room = MESSAGE_LIMIT - 2 - visible_len
    if len(body) > room:
        body = _cut(body, room)
    return header, f"{header}\n\n{escape(body)}"


@lru_cache(maxsize=1024)
def _header_and_visible_len(
    sign: Sign, date: dt.date, day_word: str, lang: Lang
) -> tuple[str, int]:
    """The header's markup and its visible length (what Telegram counts), per (sign, date,
    word, lang): a handful of distinct values a day, built once instead of per update."""
    header = horoscope_header(sign, date, day_word, lang)
    return header, len(html.unescape(_strip_tags(header)))


def visible_text(markup: str) -> str:
    """Our HTML as Telegram shows (and sends back) the message: tags gone, entities decoded."""
    return html.unescape(_strip_tags(markup))


def _strip_tags(markup: str) -> str:
    out: list[str] = []
    inside = False
    for ch in markup:
        if ch == "<":
            inside = True
        elif ch == ">":
            inside = False
        elif not inside:
            out.append(ch)
    return "".join(out)


def _cut(text: str, limit: int) -> str:
    """Cut ``text`` to at most ``limit`` characters at a space, with an ellipsis."""
    if len(text) <= limit:
        return text
    cut = text[: max(0, limit - 1)]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip() + "…"
