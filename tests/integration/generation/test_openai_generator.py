"""OpenAIGenerator against the fake OpenAI-compatible server (tests/servers/fake_llm.py, the
``fake_llm`` fixture).

Each test scripts the server's answers request by request ("500", then "ok", ...) and checks what
the generator made of them: retries where a retry can help, none where it cannot, clean text and
token counts on success, the built-in text with ``is_fallback=True`` otherwise, and never the API
key in any log line. Timeouts and backoff are shrunk through the constructor to keep this fast.
"""

from __future__ import annotations

import datetime as dt
import logging
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from bot.domain.generation import OpenAIGenerator, TemplateGenerator
from db.types import GeneratedHoroscope, Lang, Sign
from tests.servers.fake_llm import API_KEY, GOOD_EN, GOOD_RU, FakeLLM

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

DATE = dt.date(2025, 3, 12)
TIMEOUT = 0.2


MakeGen = Callable[..., OpenAIGenerator]


@pytest.fixture
async def make_gen(fake_llm: FakeLLM) -> AsyncIterator[MakeGen]:
    made: list[OpenAIGenerator] = []

    def make(**overrides: Any) -> OpenAIGenerator:
        kwargs: dict[str, Any] = {
            "base_url": fake_llm.base_url,
            "api_key": API_KEY,
            "model": "fake-model",
            "timeout": TIMEOUT,
            "fallback": TemplateGenerator(),
            "max_attempts": 3,
            "backoff_initial": 0.01,
            "backoff_max": 0.05,
        }
        kwargs.update(overrides)
        gen = OpenAIGenerator(**kwargs)
        made.append(gen)
        return gen

    yield make
    for gen in made:
        await gen.aclose()


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["event"] == name]


def template_text(sign: Sign = Sign.LEO, lang: Lang = Lang.EN) -> str:
    return TemplateGenerator().render(sign, DATE, lang)


# --- success ------------------------------------------------------------------------------------


async def test_success_records_tokens_and_sends_a_proper_request(
    fake_llm: FakeLLM, make_gen: MakeGen
) -> None:
    gen = make_gen(prompt_price_per_1m=0.15, completion_price_per_1m=0.60)
    result = await gen.generate(Sign.LEO, DATE, Lang.EN)

    assert result == GeneratedHoroscope(
        text=GOOD_EN,
        generator="openai",
        model="fake-model-2025",
        prompt_tokens=123,
        completion_tokens=456,
        cost_usd=pytest.approx((123 * 0.15 + 456 * 0.60) / 1_000_000),
        is_fallback=False,
    )
    [request] = fake_llm.requests
    assert request["auth"] == f"Bearer {API_KEY}"
    body = request["body"]
    assert body["model"] == "fake-model"
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert "Leo" in body["messages"][1]["content"]
    assert "12 March 2025" in body["messages"][1]["content"]
    assert "400 to 800 characters" in body["messages"][1]["content"]
    # Stored per date and read on two days: no relative day, the weekday when one is needed.
    assert 'never write "today", "tomorrow"' in body["messages"][1]["content"]
    assert 'say "on Wednesday"' in body["messages"][1]["content"]


async def test_russian_prompt_and_answer(fake_llm: FakeLLM, make_gen: MakeGen) -> None:
    fake_llm.script = ["ok_ru"]
    result = await make_gen().generate(Sign.ARIES, DATE, Lang.RU)
    assert result.text == GOOD_RU
    assert not result.is_fallback
    user_prompt = fake_llm.requests[0]["body"]["messages"][1]["content"]
    assert "Овен" in user_prompt
    assert "12 марта 2025 года" in user_prompt
    assert "от 400 до 800 символов" in user_prompt
    assert "не пиши «сегодня», «завтра»" in user_prompt
    assert "пиши «в среду»" in user_prompt
    assert "по-русски" in fake_llm.requests[0]["body"]["messages"][0]["content"]


async def test_markdown_is_stripped(fake_llm: FakeLLM, make_gen: MakeGen) -> None:
    fake_llm.script = ["markdown"]
    result = await make_gen().generate(Sign.LEO, DATE, Lang.EN)
    assert not result.is_fallback
    for marker in ("**", "##", "`", "_", "- ", "---", "*"):
        assert marker not in result.text
    assert result.text.startswith("Your horoscope\n\nOverall: The day opens gently")
    assert "\nLove: A kind word" in result.text
    assert "check the numbers twice" in result.text
    assert "keep the morning for quiet tasks" in result.text
    assert result.text.endswith("Lucky number: 7. Lucky colour: emerald.")


# --- retries ------------------------------------------------------------------------------------


async def test_500_then_success_retries_once(fake_llm: FakeLLM, make_gen: MakeGen) -> None:
    fake_llm.script = ["500", "ok"]
    with capture_logs() as logs:
        result = await make_gen().generate(Sign.LEO, DATE, Lang.EN)
    assert result.text == GOOD_EN
    assert not result.is_fallback
    assert result.prompt_tokens == 123
    assert len(fake_llm.requests) == 2
    [retry] = events(logs, "llm_retry")
    assert retry["reason"] == "server_error"
    assert retry["attempt"] == 1
    assert not events(logs, "llm_fallback")


async def test_429_honours_retry_after(fake_llm: FakeLLM, make_gen: MakeGen) -> None:
    fake_llm.script = ["429", "ok"]
    with capture_logs() as logs:
        result = await make_gen().generate(Sign.LEO, DATE, Lang.EN)
    assert result.text == GOOD_EN
    first, second = fake_llm.requests
    assert second["at"] - first["at"] >= 0.28  # Retry-After: 0.3, far above the tiny backoff
    [retry] = events(logs, "llm_retry")
    assert retry["reason"] == "rate_limited"
    assert retry["sleep_s"] == pytest.approx(0.3)


async def test_429_with_long_retry_after_falls_back_at_once(
    fake_llm: FakeLLM, make_gen: MakeGen
) -> None:
    fake_llm.script = ["429_long"]
    with capture_logs() as logs:
        result = await make_gen().generate(Sign.LEO, DATE, Lang.EN)
    assert not events(logs, "llm_retry")  # no wait for the Retry-After, no second request
    assert result.is_fallback
    assert len(fake_llm.requests) == 1
    assert events(logs, "llm_fallback")[0]["reason"] == "rate_limited"


async def test_slow_server_times_out_then_succeeds(fake_llm: FakeLLM, make_gen: MakeGen) -> None:
    fake_llm.script = ["slow", "ok"]
    with capture_logs() as logs:
        result = await make_gen().generate(Sign.LEO, DATE, Lang.EN)
    assert result.text == GOOD_EN
    assert len(fake_llm.requests) == 2
    assert events(logs, "llm_retry")[0]["reason"] == "timeout"


async def test_always_slow_falls_back_after_all_attempts(
    fake_llm: FakeLLM, make_gen: MakeGen
) -> None:
    fake_llm.script = ["slow"]
    with capture_logs() as logs:
        result = await make_gen().generate(Sign.LEO, DATE, Lang.EN)
    assert result.is_fallback
    assert result.text == template_text()
    assert result.generator == "template"
    assert len(fake_llm.requests) == 3
    assert [e["reason"] for e in events(logs, "llm_retry")] == ["timeout", "timeout"]
    [fallback] = events(logs, "llm_fallback")
    assert fallback["reason"] == "timeout"
    assert fallback["sign"] == "leo"
    assert fallback["lang"] == "en"


async def test_persistent_5xx_falls_back(fake_llm: FakeLLM, make_gen: MakeGen) -> None:
    fake_llm.script = ["500", "503"]
    result = await make_gen(max_attempts=4).generate(Sign.VIRGO, DATE, Lang.RU)
    assert result.is_fallback
    assert result.text == template_text(Sign.VIRGO, Lang.RU)
    assert len(fake_llm.requests) == 4


async def test_connection_refused_is_retried_then_falls_back(make_gen: MakeGen) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    gen = make_gen(base_url=f"http://127.0.0.1:{port}/v1")
    with capture_logs() as logs:
        result = await gen.generate(Sign.LEO, DATE, Lang.EN)
    assert result.is_fallback
    assert [e["reason"] for e in events(logs, "llm_retry")] == ["transport", "transport"]


# --- no retry: the answer will not change -------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("401", "http_401"),
        ("garbage", "invalid_response"),
        ("no_choices", "invalid_response"),
        ("ai", "refusal"),
        ("today", "relative_day"),
        ("truncated", "truncated"),
    ],
)
async def test_unusable_answers_fall_back_without_retry(
    fake_llm: FakeLLM, make_gen: MakeGen, mode: str, reason: str
) -> None:
    fake_llm.script = [mode]
    with capture_logs() as logs:
        result = await make_gen().generate(Sign.LEO, DATE, Lang.EN)
    assert result.is_fallback
    assert result.text == template_text()
    assert "As an AI" not in result.text
    assert len(fake_llm.requests) == 1
    assert not events(logs, "llm_retry")
    assert events(logs, "llm_fallback")[0]["reason"] == reason


async def test_answer_in_the_wrong_language_falls_back(
    fake_llm: FakeLLM, make_gen: MakeGen
) -> None:
    fake_llm.script = ["ok"]  # English text for a Russian request
    result = await make_gen().generate(Sign.LEO, DATE, Lang.RU)
    assert result.is_fallback
    assert result.text == template_text(Sign.LEO, Lang.RU)


# --- hooks, secrets, client ownership -----------------------------------------------------------


async def test_on_result_hook_sees_every_outcome(fake_llm: FakeLLM, make_gen: MakeGen) -> None:
    seen: list[tuple[bool, str]] = []
    gen = make_gen(on_result=lambda result, outcome: seen.append((result.is_fallback, outcome)))
    fake_llm.script = ["ok", "401"]
    await gen.generate(Sign.LEO, DATE, Lang.EN)
    await gen.generate(Sign.LEO, DATE, Lang.EN)
    assert seen == [(False, "ok"), (True, "http_401")]


async def test_failing_hook_does_not_break_generation(make_gen: MakeGen) -> None:
    def broken(_result: GeneratedHoroscope, _outcome: str) -> None:
        raise RuntimeError("metrics down")

    result = await make_gen(on_result=broken).generate(Sign.LEO, DATE, Lang.EN)
    assert result.text == GOOD_EN


async def test_api_key_never_logged(
    fake_llm: FakeLLM, make_gen: MakeGen, caplog: pytest.LogCaptureFixture
) -> None:
    """Across successes, retries and every kind of fallback: not in structlog, not in stdlib."""
    caplog.set_level(logging.DEBUG)
    gen = make_gen()
    fake_llm.script = ["500", "429", "slow", "401", "ok", "garbage", "ai", "markdown"]
    with capture_logs() as logs:
        for _ in range(6):
            await gen.generate(Sign.LEO, DATE, Lang.EN)
    assert events(logs, "llm_retry")
    assert events(logs, "llm_fallback")
    assert events(logs, "llm_generated")
    assert API_KEY not in repr(logs)
    assert API_KEY not in caplog.text
    assert API_KEY not in repr(gen)
    assert API_KEY[3:] not in repr(logs) + caplog.text


async def test_passed_in_client_is_used_and_left_open(fake_llm: FakeLLM, make_gen: MakeGen) -> None:
    async with httpx.AsyncClient(headers={"X-Test": "1"}) as client:
        gen = make_gen(client=client)
        result = await gen.generate(Sign.LEO, DATE, Lang.EN)
        await gen.aclose()
        assert not client.is_closed
    assert result.text == GOOD_EN
