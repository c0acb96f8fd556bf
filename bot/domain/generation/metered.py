"""Counting generations at the one place every generator is called through.

Wrapping the generator (rather than instrumenting each implementation) means the template, the
LLM and any test double are all counted the same way, and a fallback text is visible as such.
"""

from __future__ import annotations

import datetime as dt

from bot.ops.metrics import GENERATION_TOKENS, GENERATIONS
from db.types import GeneratedHoroscope, HoroscopeGenerator, Lang, Sign


class MeteredGenerator:
    """A HoroscopeGenerator that records bot_generations_total and token counts."""

    def __init__(self, inner: HoroscopeGenerator) -> None:
        self.inner = inner
        self.name = inner.name

    async def generate(self, sign: Sign, date: dt.date, lang: Lang) -> GeneratedHoroscope:
        try:
            result = await self.inner.generate(sign, date, lang)
        except Exception:
            GENERATIONS.labels(self.name, "error").inc()
            raise
        GENERATIONS.labels(self.name, "fallback" if result.is_fallback else "ok").inc()
        if result.prompt_tokens:
            GENERATION_TOKENS.labels(self.name, "prompt").inc(result.prompt_tokens)
        if result.completion_tokens:
            GENERATION_TOKENS.labels(self.name, "completion").inc(result.completion_tokens)
        return result


def metered(generator: HoroscopeGenerator) -> HoroscopeGenerator:
    """Wrap once (idempotent), so callers can apply it without knowing what they were given."""
    return generator if isinstance(generator, MeteredGenerator) else MeteredGenerator(generator)
