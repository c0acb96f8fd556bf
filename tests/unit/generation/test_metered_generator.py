from __future__ import annotations

import datetime as dt

import pytest

from bot.domain.generation.metered import MeteredGenerator, metered
from bot.ops.metrics import REGISTRY
from db.types import GeneratedHoroscope, Lang, Sign

DAY = dt.date(2026, 11, 21)


class _Fake:
    name = "fake-metered"

    def __init__(self, result: GeneratedHoroscope | None) -> None:
        self.result = result

    async def generate(self, sign: Sign, date: dt.date, lang: Lang) -> GeneratedHoroscope:
        if self.result is None:
            raise RuntimeError("model down")
        return self.result


def _count(outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "bot_generations_total", {"generator": "fake-metered", "outcome": outcome}
    )
    return value or 0.0


def _tokens(kind: str) -> float:
    value = REGISTRY.get_sample_value(
        "bot_generation_tokens_total", {"generator": "fake-metered", "kind": kind}
    )
    return value or 0.0


async def test_counts_ok_fallback_error_and_tokens() -> None:
    before = {o: _count(o) for o in ("ok", "fallback", "error")}
    tokens_before = _tokens("prompt"), _tokens("completion")
    ok = GeneratedHoroscope("text", "fake-metered", prompt_tokens=10, completion_tokens=90)
    await MeteredGenerator(_Fake(ok)).generate(Sign.LEO, DAY, Lang.EN)
    fb = GeneratedHoroscope("text", "template", is_fallback=True)
    await MeteredGenerator(_Fake(fb)).generate(Sign.LEO, DAY, Lang.EN)
    with pytest.raises(RuntimeError):
        await MeteredGenerator(_Fake(None)).generate(Sign.LEO, DAY, Lang.EN)
    assert _count("ok") == before["ok"] + 1
    assert _count("fallback") == before["fallback"] + 1
    assert _count("error") == before["error"] + 1
    assert (_tokens("prompt"), _tokens("completion")) == (
        tokens_before[0] + 10,
        tokens_before[1] + 90,
    )


def test_metered_wraps_once() -> None:
    gen = metered(_Fake(None))
    assert metered(gen) is gen
    assert gen.name == "fake-metered"
