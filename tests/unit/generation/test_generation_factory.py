"""build_generator: the HOROSCOPE_GENERATOR setting turned into an instance."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from bot.domain.generation import OpenAIGenerator, TemplateGenerator, build_generator

pytestmark = pytest.mark.unit

LLM = {
    "llm_base_url": "http://127.0.0.1:9/v1",
    "llm_api_key": SecretStr("sk-test-secret"),
    "llm_model": "tiny",
    "llm_timeout": 1.0,
}


def test_template_is_built_and_ignores_llm_settings() -> None:
    gen = build_generator("template", **{**LLM, "llm_api_key": None})  # type: ignore[arg-type]
    assert isinstance(gen, TemplateGenerator)
    assert gen.name == "template"


@pytest.mark.parametrize("kind", ["openai", " OpenAI "])
def test_openai_is_built_with_template_fallback(kind: str) -> None:
    gen = build_generator(kind, **LLM)  # type: ignore[arg-type]
    assert isinstance(gen, OpenAIGenerator)
    assert gen.name == "openai"
    assert isinstance(gen.fallback, TemplateGenerator)
    assert "sk-test-secret" not in repr(gen)


def test_openai_accepts_plain_string_key() -> None:
    gen = build_generator("openai", **{**LLM, "llm_api_key": "sk-plain"})  # type: ignore[arg-type]
    assert isinstance(gen, OpenAIGenerator)
    assert "sk-plain" not in repr(gen)


@pytest.mark.parametrize("key", [None, "", SecretStr("")])
def test_openai_without_key_names_the_setting(key: SecretStr | str | None) -> None:
    with pytest.raises(ValueError, match="LLM_API_KEY"):
        build_generator("openai", **{**LLM, "llm_api_key": key})  # type: ignore[arg-type]


def test_unknown_kind_names_the_setting() -> None:
    with pytest.raises(ValueError, match="HOROSCOPE_GENERATOR") as info:
        build_generator("gpt5", **LLM)  # type: ignore[arg-type]
    assert "gpt5" in str(info.value)
