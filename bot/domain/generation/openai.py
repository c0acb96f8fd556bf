"""Horoscopes from any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, Ollama, ...).

Plain httpx rather than an SDK: one POST is all we need, and it keeps timeouts, retries and error
classification explicit. The contract with the caller is that :meth:`OpenAIGenerator.generate`
never raises for a model or network problem: after bounded retries (timeouts, 429, 5xx) or on
unusable output it returns the fallback generator's text marked ``is_fallback=True``, which the
repository caches only briefly and does not persist, so the model is asked again later.

The API key is kept as a ``SecretStr`` and only unwrapped into the Authorization header; it is
never logged, never part of an exception message and not shown by ``repr``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import email.utils
import math
import time
from collections.abc import Callable
from typing import Any

import httpx
import structlog
from pydantic import SecretStr
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from bot.domain.generation.prompts import build_messages
from bot.domain.generation.validation import InvalidOutputError, clean_output
from db.types import GeneratedHoroscope, HoroscopeGenerator, Lang, Sign

__all__ = ["GenerationFailedError", "OpenAIGenerator", "ResultHook"]

log = structlog.get_logger(__name__)

#: Called once per ``generate`` with the returned horoscope and the outcome: "ok", or the reason
#: the fallback was used ("timeout", "rate_limited", "server_error", "http_401", "refusal", ...).
#: Metrics hang off this hook; an exception inside it is logged and swallowed.
ResultHook = Callable[[GeneratedHoroscope, str], None]


class GenerationFailedError(Exception):
    """One attempt failed; ``reason`` is a short stable label for logs and metrics."""

    retryable = False

    def __init__(self, reason: str, *, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class _RetryableError(GenerationFailedError):
    """Worth another attempt: the server may well answer next time (timeout, 429, 5xx)."""

    retryable = True


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None if unusable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        seconds = when.timestamp() - (time.time() if now is None else now)
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return max(seconds, 0.0)


class OpenAIGenerator:
    """Chat-completions generator with retries, output validation and a built-in fallback.

    ``timeout`` bounds each HTTP attempt; the worst case of one ``generate`` is roughly
    ``max_attempts * timeout`` plus the backoff (``backoff_initial`` doubling up to
    ``backoff_max``) — the tests shrink both to keep fast. A 429 whose Retry-After exceeds
    ``max_retry_after`` is not waited for: a user is waiting, the fallback answers at once.
    """

    name = "openai"

    def __init__(
        self,
        base_url: str,
        api_key: SecretStr | str,
        model: str,
        timeout: float,
        *,
        fallback: HoroscopeGenerator,
        max_attempts: int = 3,
        client: httpx.AsyncClient | None = None,
        backoff_initial: float = 0.5,
        backoff_max: float = 8.0,
        max_retry_after: float = 10.0,
        temperature: float = 0.9,
        max_tokens: int = 1000,
        prompt_price_per_1m: float | None = None,
        completion_price_per_1m: float | None = None,
        on_result: ResultHook | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._api_key = api_key if isinstance(api_key, SecretStr) else SecretStr(api_key)
        self.model = model
        self._timeout = timeout
        self._fallback = fallback
        self._max_attempts = max_attempts
        self._client = client
        self._owns_client = client is None
        # Exponential with a little jitter so that several instances do not retry in lockstep.
        self._backoff = wait_exponential(multiplier=backoff_initial, max=backoff_max) + wait_random(
            0, backoff_initial / 2
        )
        self._max_retry_after = max_retry_after
        self._temperature = temperature
        self._max_tokens = max_tokens
        self._prices = (prompt_price_per_1m, completion_price_per_1m)
        self._on_result = on_result

    def __repr__(self) -> str:
        return f"OpenAIGenerator(url={self._url!r}, model={self.model!r})"

    @property
    def fallback(self) -> HoroscopeGenerator:
        return self._fallback

    async def aclose(self) -> None:
        """Close the HTTP client if this generator created it (a passed-in one is the caller's)."""
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    async def generate(self, sign: Sign, date: dt.date, lang: Lang) -> GeneratedHoroscope:
        started = time.perf_counter()
        bound = log.bind(sign=sign.value, date=date.isoformat(), lang=lang.value, model=self.model)
        try:
            result = await self._generate_with_retries(sign, date, lang, bound)
            outcome = "ok"
            bound.info(
                "llm_generated",
                prompt_tokens=result.prompt_tokens,
                completion_tokens=result.completion_tokens,
                chars=len(result.text),
                elapsed_ms=round((time.perf_counter() - started) * 1000),
            )
        except GenerationFailedError as exc:
            outcome = exc.reason
            result = await self._fall_back(sign, date, lang, bound, outcome, started)
        except Exception as exc:  # a bug or an unexpected library error: still serve a text
            outcome = "error"
            bound.warning("llm_unexpected_error", error=type(exc).__name__)
            result = await self._fall_back(sign, date, lang, bound, outcome, started)
        self._notify(result, outcome)
        return result

    async def _fall_back(
        self,
        sign: Sign,
        date: dt.date,
        lang: Lang,
        bound: Any,
        reason: str,
        started: float,
    ) -> GeneratedHoroscope:
        bound.warning(
            "llm_fallback",
            reason=reason,
            fallback=self._fallback.name,
            elapsed_ms=round((time.perf_counter() - started) * 1000),
        )
        text = await self._fallback.generate(sign, date, lang)
        return dataclasses.replace(text, is_fallback=True)

    def _notify(self, result: GeneratedHoroscope, outcome: str) -> None:
        if self._on_result is None:
            return
        try:
            self._on_result(result, outcome)
        except Exception as exc:  # metrics must never break generation
            log.warning("llm_result_hook_failed", error=type(exc).__name__)

    async def _generate_with_retries(
        self, sign: Sign, date: dt.date, lang: Lang, bound: Any
    ) -> GeneratedHoroscope:
        payload = {
            "model": self.model,
            "messages": build_messages(sign, date, lang),
            "temperature": self._temperature,
            "max_tokens": self._max_tokens,
        }

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            bound.warning(
                "llm_retry",
                attempt=state.attempt_number,
                max_attempts=self._max_attempts,
                reason=getattr(exc, "reason", type(exc).__name__),
                sleep_s=round(state.next_action.sleep, 3) if state.next_action else None,
            )

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._max_attempts),
            wait=self._wait,
            retry=retry_if_exception_type(_RetryableError),
            before_sleep=before_sleep,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                data = await self._post(payload)
        return self._parse(data, lang)

    def _wait(self, state: RetryCallState) -> float:
        """Honour the server's Retry-After when it sent one, else exponential backoff."""
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, GenerationFailedError) and exc.retry_after is not None:
            return exc.retry_after
        return float(self._backoff(state))

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._timeout)
        return self._client

    async def _post(self, payload: dict[str, Any]) -> Any:
        """One attempt: classify every failure as retryable or final (never leak the key)."""
        headers = {"Authorization": f"Bearer {self._api_key.get_secret_value()}"}
        try:
            response = await self._http().post(
                self._url, json=payload, headers=headers, timeout=self._timeout
            )
        except httpx.TimeoutException as exc:
            raise _RetryableError("timeout") from exc
        except httpx.TransportError as exc:
            raise _RetryableError("transport") from exc

        status = response.status_code
        if status == 429:
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            if retry_after is not None and retry_after > self._max_retry_after:
                raise GenerationFailedError("rate_limited")
            raise _RetryableError("rate_limited", retry_after=retry_after)
        if status >= 500:
            raise _RetryableError("server_error")
        if status >= 400:
            raise GenerationFailedError(f"http_{status}")
        try:
            return response.json()
        except ValueError as exc:
            raise GenerationFailedError("invalid_response") from exc

    def _parse(self, data: Any, lang: Lang) -> GeneratedHoroscope:
        """Pull text and usage out of a chat-completions body and validate the text."""
        try:
            choice = data["choices"][0]
            content = choice["message"]["content"]
        except (KeyError, IndexError, TypeError) as exc:
            raise GenerationFailedError("invalid_response") from exc
        if not isinstance(content, str):
            raise GenerationFailedError("invalid_response")
        if isinstance(choice, dict) and choice.get("finish_reason") == "length":
            raise GenerationFailedError("truncated")
        try:
            text = clean_output(content, lang=lang)
        except InvalidOutputError as exc:
            raise GenerationFailedError(exc.reason) from exc

        usage = data.get("usage") if isinstance(data, dict) else None
        prompt_tokens = _int_or_none(usage, "prompt_tokens")
        completion_tokens = _int_or_none(usage, "completion_tokens")
        return GeneratedHoroscope(
            text=text,
            generator=self.name,
            model=str(data.get("model") or self.model),
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cost_usd=self._cost(prompt_tokens, completion_tokens),
            is_fallback=False,
        )

    def _cost(self, prompt_tokens: int | None, completion_tokens: int | None) -> float | None:
        prompt_price, completion_price = self._prices
        if prompt_price is None or completion_price is None:
            return None
        if prompt_tokens is None or completion_tokens is None:
            return None
        return (prompt_tokens * prompt_price + completion_tokens * completion_price) / 1_000_000


def _int_or_none(usage: Any, key: str) -> int | None:
    if not isinstance(usage, dict):
        return None
    value = usage.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None
