"""structlog set-up: JSON lines in production, a readable console in development.

stdlib logging (aiogram, SQLAlchemy, APScheduler, asyncio) is routed through the same processor
chain, contextvars carry update_id / user_id / job, and a masking processor removes anything
shaped like a bot token or an API key before a line is rendered, wherever it came from.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping
from contextvars import ContextVar, Token
from typing import Any

import structlog
from structlog.types import EventDict, Processor

# <bot id>:<35 chars>, also inside URLs like /bot123:AA.../getMe; OpenAI-style sk-... keys.
_TOKEN_RE = re.compile(r"(?<!\d)(\d{5,16}):[A-Za-z0-9_-]{20,}")
_APIKEY_RE = re.compile(r"\bsk-[A-Za-z0-9_-]{16,}")
_SECRET_KEYS = frozenset(
    {"token", "bot_token", "api_key", "llm_api_key", "password", "authorization"}
)


def mask_secrets_in_text(text: str) -> str:
    text = _TOKEN_RE.sub(r"\1:***", text)
    return _APIKEY_RE.sub("sk-***", text)


def _mask(value: Any) -> Any:
    if isinstance(value, str):
        return mask_secrets_in_text(value)
    if isinstance(value, Mapping):
        return {
            k: ("***" if str(k).lower() in _SECRET_KEYS else _mask(v)) for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(_mask(v) for v in value)
    return value


def mask_secrets(_: Any, __: str, event_dict: EventDict) -> EventDict:
    """Processor: never let a bot token or API key reach a log line."""
    for key, value in list(event_dict.items()):
        if key.lower() in _SECRET_KEYS and value is not None:
            event_dict[key] = "***"
        elif isinstance(value, str | Mapping | list | tuple):
            event_dict[key] = _mask(value)
        elif isinstance(value, BaseException):
            event_dict[key] = mask_secrets_in_text(repr(value))
    return event_dict


def _mask_rendered(_: Any, __: str, event_dict: EventDict) -> EventDict:
    # Tracebacks are rendered into "exception" by format_exc_info: mask them too.
    exc = event_dict.get("exception")
    if isinstance(exc, str):
        event_dict["exception"] = mask_secrets_in_text(exc)
    return event_dict


#: The update being handled (update_id, user_id): set once per update by the context
#: middleware. One ContextVar set and reset per update instead of structlog's
#: bind/unbind_contextvars (a ContextVar per key, looked up by name, twice each): the hot path.
_UPDATE: ContextVar[tuple[int, int | None] | None] = ContextVar("horo_update", default=None)


def bind_update(update_id: int, user_id: int | None) -> Token[tuple[int, int | None] | None]:
    """Every line logged while this update is handled carries its ids (``reset_update``)."""
    return _UPDATE.set((update_id, user_id))


def reset_update(token: Token[tuple[int, int | None] | None]) -> None:
    _UPDATE.reset(token)


def merge_update(_: Any, __: str, event_dict: EventDict) -> EventDict:
    """Processor: ``update_id`` / ``user_id`` of the update being handled, if any."""
    current = _UPDATE.get()
    if current is not None:
        event_dict.setdefault("update_id", current[0])
        event_dict.setdefault("user_id", current[1])
    return event_dict


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    """Configure structlog and route stdlib logging through the same pipeline. Idempotent."""
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        merge_update,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        mask_secrets,
    ]
    renderer: Processor
    if fmt == "console":
        # Plain tracebacks, rendered to text before masking: rich's pretty tracebacks show
        # local variables (a token, a Bot API URL) after every processor has run.
        renderer = structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
        final: list[Processor] = [structlog.processors.format_exc_info, _mask_rendered, renderer]
    else:
        final = [
            structlog.processors.format_exc_info,
            _mask_rendered,
            structlog.processors.JSONRenderer(),
        ]

    structlog.configure(
        processors=[
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.UnicodeDecoder(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Libraries that are chatty at INFO: keep their warnings, drop their noise.
    for name, lib_level in (
        ("sqlalchemy.engine", "WARNING"),
        ("aiogram.event", "WARNING" if level != "DEBUG" else "DEBUG"),
        ("apscheduler.executors.default", "WARNING"),
        ("aiohttp.access", "WARNING"),
        ("alembic.runtime.plugins", "WARNING"),
    ):
        logging.getLogger(name).setLevel(lib_level)


def bind_context(**values: Any) -> None:
    structlog.contextvars.bind_contextvars(**values)


def clear_context(*keys: str) -> None:
    if keys:
        structlog.contextvars.unbind_contextvars(*keys)
    else:
        structlog.contextvars.clear_contextvars()
