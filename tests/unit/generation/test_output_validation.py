"""Cleanup and validation of model output (pure functions, so property-tested)."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.domain.generation.validation import (
    MAX_CHARS,
    MIN_CHARS,
    InvalidOutputError,
    clean_output,
    strip_markdown,
)
from db.types import Lang

pytestmark = pytest.mark.unit

GOOD_EN = (
    "Overall: The day opens gently and picks up pace after lunch. Trust your first impulse. "
    "Love: A kind word goes further than a grand gesture. Work and money: A careful plan pays off, "
    "so check the numbers twice. Health: Take a walk in the evening and go to bed early. "
    "Lucky number: 7. Lucky colour: emerald."
)
GOOD_RU = (
    "В целом: Утро начнётся спокойно, а после обеда темп ускорится. Доверяйте первому порыву. "
    "Любовь: Доброе слово значит больше громких жестов. Работа и деньги: Продуманный план "
    "окупится, поэтому перепроверьте цифры. Здоровье: Прогуляйтесь вечером и ложитесь пораньше. "
    "Счастливое число: 7. Цвет удачи: изумрудный."
)

# Markdown fragments a model likes to produce, mixed into arbitrary text below.
MARKDOWN_BITS = st.sampled_from(
    [
        "# ", "## ", "### ", "**", "__", "*", "_", "`", "```", "```text\n", "- ", "* ", "+ ",
        "• ", "> ", "\n", "\n\n", "---\n", "***", "[link](http://x.y)", "![img](a.png)", "~~",
        " ", "\t", "\r\n", "\u2028", "\xa0", "#",
    ]
)  # fmt: skip
MARKDOWNISH = st.lists(st.one_of(MARKDOWN_BITS, st.text(max_size=12)), max_size=60).map("".join)


def assert_no_markdown(text: str) -> None:
    assert not re.search(r"[*`_]|~~", text), text
    assert "\r" not in text
    for line in text.split("\n"):
        assert line == line.strip()
        assert not line.startswith(("#", ">")), line
        assert not re.match(r"[-+•](\s|$)", line), line
    assert "\n\n\n" not in text


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(), MARKDOWNISH))
def test_strip_markdown_never_crashes_and_leaves_no_markers(text: str) -> None:
    cleaned = strip_markdown(text)
    assert isinstance(cleaned, str)
    assert_no_markdown(cleaned)
    assert strip_markdown(cleaned) == cleaned  # idempotent


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=2000), MARKDOWNISH), st.sampled_from([None, Lang.RU, Lang.EN]))
def test_clean_output_returns_clean_text_or_raises_invalid(text: str, lang: Lang | None) -> None:
    try:
        cleaned = clean_output(text, lang=lang)
    except InvalidOutputError as exc:
        assert exc.reason in {
            "empty",
            "refusal",
            "relative_day",
            "too_short",
            "too_long",
            "wrong_language",
        }
        return
    assert MIN_CHARS <= len(cleaned) <= MAX_CHARS
    assert_no_markdown(cleaned)


@settings(max_examples=100)
@given(st.sampled_from(["**", "__", "*", "_", "`"]), st.sampled_from([GOOD_EN, GOOD_RU]))
def test_emphasis_is_removed_but_words_kept(marker: str, good: str) -> None:
    decorated = good.replace("Love:", f"{marker}Love:{marker}").replace(
        "Любовь:", f"{marker}Любовь:{marker}"
    )
    assert clean_output(decorated) == good


def test_typical_markdown_answer_is_cleaned() -> None:
    answer = (
        "## Гороскоп для Овна\n\n"
        "**В целом:** Утро начнётся спокойно, а после обеда темп ускорится. _Доверяйте_ порыву.\n"
        "- **Любовь:** Доброе слово значит больше громких жестов.\n"
        "* *Работа и деньги:* Продуманный план окупится, поэтому перепроверьте `цифры`.\n"
        "> Здоровье: Прогуляйтесь вечером и ложитесь пораньше, отдых важнее всего.\n"
        "---\n"
        "1. Счастливое число: 7. Цвет удачи: изумрудный."
    )
    cleaned = clean_output(answer, lang=Lang.RU)
    assert cleaned.startswith("Гороскоп для Овна\n\nВ целом: Утро")
    assert "\nЛюбовь: Доброе" in cleaned
    assert "\nРабота и деньги: Продуманный план" in cleaned
    assert "перепроверьте цифры." in cleaned
    assert "\nЗдоровье: Прогуляйтесь" in cleaned
    assert "1. Счастливое число: 7." in cleaned  # numbers are content, not markers
    assert_no_markdown(cleaned)


def test_links_keep_their_text_and_lose_the_url() -> None:
    assert strip_markdown("See [the stars](https://example.com) tonight") == "See the stars tonight"


def test_control_characters_and_whitespace_are_tidied() -> None:
    assert strip_markdown("a\x00b\r\nc\t\td  \n\n\n\ne\u200b") == "ab\nc d\n\ne\u200b"


@pytest.mark.parametrize(
    "phrase",
    [
        "As an AI, I do not have beliefs, but",
        "As an AI language model, I cannot predict the future.",
        "as a language model I think",
        "I'm sorry, but I can’t help with that.",
        "I cannot provide horoscopes.",
        "Как ИИ, я не верю в астрологию, но",
        "Как языковая модель, я не могу предсказывать будущее.",
        "Я не могу составить гороскоп.",
        "Я — ИИ и не знаю будущего.",
        "Будучи языковой моделью, скажу:",
    ],
)
def test_refusals_are_rejected(phrase: str) -> None:
    for good in (GOOD_EN, GOOD_RU):
        with pytest.raises(InvalidOutputError) as info:
            clean_output(f"{phrase} {good}")
        assert info.value.reason == "refusal"


def test_harmless_lookalikes_are_accepted() -> None:
    text = GOOD_EN + " Say what you mean: you can not please everyone, and that is fine."
    assert clean_output(text, lang=Lang.EN) == text
    ru = GOOD_RU + " Ещё один совет: не откладывайте важное на потом."
    assert clean_output(ru, lang=Lang.RU) == ru


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("   \n\n ** ## --- \n", "empty"),
        ("Overall: fine.", "too_short"),
        (GOOD_EN * 10, "too_long"),
    ],
)
def test_bounds(text: str, reason: str) -> None:
    with pytest.raises(InvalidOutputError) as info:
        clean_output(text)
    assert info.value.reason == reason


def test_language_is_checked_when_given() -> None:
    assert clean_output(GOOD_RU, lang=Lang.RU) == GOOD_RU
    assert clean_output(GOOD_EN, lang=Lang.EN) == GOOD_EN
    with pytest.raises(InvalidOutputError, match="wrong_language"):
        clean_output(GOOD_EN, lang=Lang.RU)
    with pytest.raises(InvalidOutputError, match="wrong_language"):
        clean_output(GOOD_RU, lang=Lang.EN)


def test_length_is_measured_after_cleanup() -> None:
    padded = "**" * 100 + GOOD_EN[:150] + "**" * 100
    with pytest.raises(InvalidOutputError, match="too_short"):
        clean_output(padded)


@pytest.mark.parametrize(
    "phrase",
    [
        "Today brings a pleasant surprise.",
        "Tonight is for rest.",
        "Tomorrow's meeting goes well.",
        "Yesterday's worry fades.",
        "A kind word goes far this evening.",
        "Сегодня вас ждёт приятный сюрприз.",
        "Отложите часть сегодняшнего дохода.",
        "Завтра всё сложится.",
        "Завтрашняя встреча пройдёт хорошо.",
        "Вчерашние тревоги уйдут.",
        "Этим вечером отдохните.",
        "Нынче звёзды благосклонны.",
    ],
)
def test_words_that_count_days_from_the_reader_are_rejected(phrase: str) -> None:
    """The text is stored per date and read on two days: "today" is wrong on one of them."""
    for good in (GOOD_EN, GOOD_RU):
        with pytest.raises(InvalidOutputError) as info:
            clean_output(f"{good} {phrase}")
        assert info.value.reason == "relative_day"


def test_day_neutral_words_are_accepted() -> None:
    en = GOOD_EN + " On Friday the evening favours tender words; the day ends calmly."
    assert clean_output(en, lang=Lang.EN) == en
    ru = GOOD_RU + " В пятницу за завтраком и вечером день пройдёт спокойно."
    assert clean_output(ru, lang=Lang.RU) == ru
