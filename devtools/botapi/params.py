"""Request parameter decoding for the Bot API double.

aiogram sends every request as multipart/form-data in which every value is a string: JSON-typed
fields (reply_markup, entities, media, ...) arrive JSON-encoded, numbers and booleans as their
JSON text, and uploads as file parts referenced by ``attach://<name>`` (or put directly under
the field name). Telegram also accepts query strings, urlencoded forms and JSON bodies; the
double does too, so hand-written clients (curl, the playground) work.
"""

from __future__ import annotations

import json
from typing import Any

from devtools.botapi.models import APIError, bad_request

__all__ = ["Params", "normalize"]

JSON_FIELDS = frozenset(
    {
        "reply_markup",
        "entities",
        "caption_entities",
        "commands",
        "scope",
        "results",
        "media",
        "allowed_updates",
        "reply_parameters",
        "link_preview_options",
        "button",
        "input_message_content",
    }
)
INT_FIELDS = frozenset(
    {
        "chat_id",
        "message_id",
        "from_chat_id",
        "user_id",
        "offset",
        "limit",
        "timeout",
        "cache_time",
        "message_thread_id",
        "reply_to_message_id",
        "max_connections",
    }
)
BOOL_PREFIXES = ("disable_", "is_", "show_", "has_", "drop_", "allow_", "protect_")


def _decode_value(key: str, value: Any) -> Any:
    if not isinstance(value, str):
        return value
    if key in JSON_FIELDS:
        try:
            return json.loads(value)
        except ValueError:
            raise bad_request(f"can't parse {key} JSON object") from None
    if key in INT_FIELDS:
        try:
            return int(value)
        except ValueError:
            return value  # "@username" chat ids stay strings
    if key.startswith(BOOL_PREFIXES) and value in ("true", "false", "True", "False", "1", "0"):
        return value in ("true", "True", "1")
    return value


def normalize(raw: dict[str, Any]) -> dict[str, Any]:
    """Decode raw request fields into typed values (files are left as they are)."""
    return {key: _decode_value(key, value) for key, value in raw.items()}


class Params:
    """Typed accessors over normalized params that fail the way Telegram does."""

    def __init__(self, values: dict[str, Any], files: dict[str, Any] | None = None) -> None:
        self.values = values
        self.files = files or {}

    def __contains__(self, key: str) -> bool:
        return key in self.values and self.values[key] not in (None, "")

    def get(self, key: str, default: Any = None) -> Any:
        value = self.values.get(key, default)
        return default if value in (None, "") else value

    def get_str(self, key: str, *, required: bool = False, empty: str | None = None) -> str | None:
        value = self.values.get(key)
        if value in (None, ""):
            if required:
                raise bad_request(empty or f"{key} is empty")
            return None
        return value if isinstance(value, str) else json.dumps(value)

    def get_int(
        self, key: str, *, required: bool = False, default: int | None = None
    ) -> int | None:
        value = self.values.get(key)
        if value in (None, ""):
            if required:
                raise bad_request(f"{key} is empty")
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            try:
                return int(value)
            except (TypeError, ValueError):
                raise bad_request(f"invalid {key} specified") from None
        return value

    def get_bool(self, key: str, default: bool = False) -> bool:
        value = self.values.get(key)
        if value in (None, ""):
            return default
        if isinstance(value, str):
            return value.lower() in ("true", "1")
        return bool(value)

    def get_json(self, key: str, default: Any = None) -> Any:
        value = self.values.get(key)
        return default if value in (None, "") else value


def require(condition: bool, error: APIError) -> None:
    """Raise ``error`` unless ``condition``: keeps method bodies flat."""
    if not condition:
        raise error
