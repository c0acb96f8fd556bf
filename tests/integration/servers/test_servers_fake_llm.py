"""The fake OpenAI-compatible server does what each mode says, switched at run time."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import httpx
import pytest

from tests.servers.fake_llm import GOOD_EN, GOOD_RU, FakeLLM

pytestmark = pytest.mark.timeout(30)

RU_BODY = {"model": "m", "messages": [{"role": "user", "content": "Гороскоп для Овна"}]}
EN_BODY = {"model": "m", "messages": [{"role": "user", "content": "Horoscope for Aries"}]}


async def post(fake: FakeLLM, body: Mapping[str, object], wait: float = 5.0) -> httpx.Response:
    async with httpx.AsyncClient(timeout=wait) as client:
        return await client.post(f"{fake.base_url}/chat/completions", json=body)


def content(response: httpx.Response) -> str:
    return str(response.json()["choices"][0]["message"]["content"])


async def test_modes_switched_at_run_time(fake_llm: FakeLLM) -> None:
    assert content(await post(fake_llm, EN_BODY)) == GOOD_EN

    fake_llm.mode = "auto"
    assert content(await post(fake_llm, RU_BODY)) == GOOD_RU
    assert content(await post(fake_llm, EN_BODY)) == GOOD_EN

    fake_llm.mode = "500"
    assert (await post(fake_llm, EN_BODY)).status_code == 500
    fake_llm.mode = "503"
    assert (await post(fake_llm, EN_BODY)).status_code == 503

    fake_llm.mode = "garbage"
    response = await post(fake_llm, EN_BODY)
    assert response.status_code == 200
    with pytest.raises(ValueError):
        response.json()

    fake_llm.mode = "ok"
    assert content(await post(fake_llm, EN_BODY)) == GOOD_EN
    assert [r["mode"] for r in fake_llm.requests] == [
        "ok", "auto", "auto", "500", "503", "garbage", "ok",
    ]  # fmt: skip


async def test_hang_holds_until_released(fake_llm: FakeLLM) -> None:
    fake_llm.mode = "hang"
    with pytest.raises(httpx.ReadTimeout):
        await post(fake_llm, EN_BODY, wait=0.3)
    pending = asyncio.create_task(post(fake_llm, RU_BODY))
    await fake_llm.await_requests(2)  # it is at the server, being held
    assert not pending.done()
    fake_llm.release()
    assert content(await pending) == GOOD_RU


async def test_slow_answers_after_its_delay(fake_llm: FakeLLM) -> None:
    fake_llm.mode = "slow"
    fake_llm.delay = 0.2
    with pytest.raises(httpx.ReadTimeout):
        await post(fake_llm, EN_BODY, wait=0.05)  # the client gives up first
    assert content(await post(fake_llm, EN_BODY, wait=10)) == GOOD_EN  # then it answers


def test_unknown_mode_is_rejected(fake_llm: FakeLLM) -> None:
    with pytest.raises(ValueError, match="unknown mode"):
        fake_llm.mode = "sometimes"
