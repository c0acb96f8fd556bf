"""Horoscope generators behind the one ``HoroscopeGenerator`` interface of ``db.types``.

``build_generator`` turns the ``HOROSCOPE_GENERATOR`` setting into an instance, so the rest of the
bot never imports a concrete generator and a bad setting fails at start-up with a clear message.
"""

from __future__ import annotations

from pydantic import SecretStr

from bot.domain.generation.openai import GenerationFailedError, OpenAIGenerator, ResultHook
from bot.domain.generation.template import TemplateGenerator
from bot.domain.generation.validation import InvalidOutputError, clean_output, strip_markdown
from db.types import HoroscopeGenerator

__all__ = [
    "GENERATOR_KINDS",
    "GenerationFailedError",
    "InvalidOutputError",
    "OpenAIGenerator",
    "ResultHook",
    "TemplateGenerator",
    "build_generator",
    "clean_output",
    "strip_markdown",
]

GENERATOR_KINDS = ("template", "openai")


def build_generator(
    kind: str,
    *,
    llm_base_url: str,
    llm_api_key: SecretStr | str | None,
    llm_model: str,
    llm_timeout: float,
    llm_max_attempts: int = 3,
    on_result: ResultHook | None = None,
) -> HoroscopeGenerator:
    """The generator named by ``HOROSCOPE_GENERATOR``; the LLM one falls back to the template.

    The ``llm_*`` arguments are ignored for "template" (so settings can pass them always).
    """
    normalized = kind.strip().lower()
    if normalized == "template":
        return TemplateGenerator()
    if normalized == "openai":
        secret = (
            llm_api_key.get_secret_value() if isinstance(llm_api_key, SecretStr) else llm_api_key
        )
        if not secret:
            raise ValueError("HOROSCOPE_GENERATOR=openai needs LLM_API_KEY (or LLM_API_KEY_FILE)")
        if not llm_base_url.strip():
            raise ValueError("HOROSCOPE_GENERATOR=openai needs LLM_BASE_URL")
        if not llm_model.strip():
            raise ValueError("HOROSCOPE_GENERATOR=openai needs LLM_MODEL")
        return OpenAIGenerator(
            llm_base_url,
            SecretStr(secret),
            llm_model,
            llm_timeout,
            fallback=TemplateGenerator(),
            max_attempts=llm_max_attempts,
            on_result=on_result,
        )
    raise ValueError(
        f"HOROSCOPE_GENERATOR must be one of {', '.join(GENERATOR_KINDS)}, got {kind!r}"
    )
