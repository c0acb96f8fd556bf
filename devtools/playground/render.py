"""Turn Bot API Message JSON into what the playground page draws, without ever trusting bot text.

The bot sends HTML-formatted text; the double has already parsed it into plain text plus
entities (as Telegram does). Rebuilding HTML from that and assigning it to ``innerHTML`` would
reopen exactly the injection hole that escaping closes, so the page instead receives a tree of
plain-text leaves and entity nodes and builds DOM elements with ``textContent``. The tree is
built here, in Python, so the tricky part (UTF-16 offsets, nesting, overlapping entities, unsafe
link schemes) is unit-tested without a browser.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

__all__ = [
    "SAFE_URL_SCHEMES",
    "buttons_view",
    "entities_to_nodes",
    "inline_result_view",
    "message_view",
    "photo_url",
    "safe_url",
]

Node = dict[str, Any]

#: Link schemes the page may put into an ``href``; anything else (javascript:, data:) is dropped.
SAFE_URL_SCHEMES = frozenset({"http", "https", "tg", "mailto"})

#: Entity fields the page needs besides the type; everything else is ignored.
_EXTRA_FIELDS = ("language", "user_id", "custom_emoji_id")


@dataclass
class _Span:
    start: int
    end: int
    order: int  # position in the original list, a stable tie-breaker
    entity: dict[str, Any] = field(repr=False)


def safe_url(url: Any) -> str | None:
    """``url`` if it is a link a browser may follow without running code, else None."""
    if not isinstance(url, str) or not url.strip():
        return None
    try:
        scheme = urlsplit(url.strip()).scheme.lower()
    except ValueError:
        return None
    return url.strip() if scheme in SAFE_URL_SCHEMES else None


def _slice(units: bytes, start: int, end: int) -> str:
    # Offsets are UTF-16 code units; bad offsets that split a surrogate pair degrade to U+FFFD.
    return units[2 * start : 2 * end].decode("utf-16-le", errors="replace")


def _entity_node(entity: dict[str, Any], text: str) -> Node:
    kind = str(entity.get("type", ""))
    node: Node = {"type": kind}
    for name in _EXTRA_FIELDS:
        if entity.get(name) is not None:
            node[name] = entity[name]
    if kind == "text_link":
        url = safe_url(entity.get("url"))
        if url is not None:
            node["url"] = url
    elif kind == "url":
        # A bare "example.com" in text is a link in Telegram too; give it a scheme.
        candidate = text if "://" in text else f"https://{text}"
        url = safe_url(candidate)
        if url is not None:
            node["url"] = url
    elif kind == "email":
        node["url"] = f"mailto:{quote(text, safe='@.+-_')}"
    return node


def _nest(spans: list[_Span], start: int, end: int, units: bytes) -> list[Node]:
    """Children of the range [start, end): text leaves and entity nodes, properly nested.

    Telegram's entities nest in practice, but the Bot API allows overlaps; an entity that
    crosses the end of an earlier one is split in two, so the result is always a tree.
    """
    out: list[Node] = []
    pos = start
    pending = sorted(spans, key=lambda s: (s.start, -(s.end - s.start), s.order))
    while pending:
        first = pending.pop(0)
        inner: list[_Span] = []
        rest: list[_Span] = []
        for span in pending:
            if span.start >= first.end:
                rest.append(span)
            elif span.end <= first.end:
                inner.append(span)
            else:
                inner.append(_Span(span.start, first.end, span.order, span.entity))
                rest.append(_Span(first.end, span.end, span.order, span.entity))
        if first.start > pos:
            out.append({"text": _slice(units, pos, first.start)})
        node = _entity_node(first.entity, _slice(units, first.start, first.end))
        node["children"] = _nest(inner, first.start, first.end, units)
        out.append(node)
        pos = first.end
        pending = sorted(rest, key=lambda s: (s.start, -(s.end - s.start), s.order))
    if pos < end:
        out.append({"text": _slice(units, pos, end)})
    return out


def entities_to_nodes(text: str, entities: list[dict[str, Any]] | None) -> list[Node]:
    """A DOM-ready tree for ``text`` with Bot API ``entities`` (UTF-16 offsets).

    Leaves are ``{"text": str}``; entity nodes are ``{"type": ..., "children": [...]}`` plus
    ``url`` (only when safe), ``language`` etc. Entities outside the text, of zero length, or
    malformed are ignored rather than failing the whole message.
    """
    units = text.encode("utf-16-le")
    total = len(units) // 2
    spans: list[_Span] = []
    for order, entity in enumerate(entities or ()):
        if not isinstance(entity, dict):
            continue
        try:
            offset, length = int(entity["offset"]), int(entity["length"])
        except (KeyError, TypeError, ValueError):
            continue
        start, stop = max(0, offset), min(total, offset + length)
        if stop > start:
            spans.append(_Span(start, stop, order, entity))
    return _nest(spans, 0, total, units)


def photo_url(file_id: str) -> str:
    """The page's URL for a photo's bytes (served from the double's stored upload)."""
    return f"/playground/photo/{quote(file_id, safe='')}"


def buttons_view(markup: dict[str, Any] | None) -> list[list[dict[str, Any]]]:
    """Inline keyboard rows as the page needs them: label plus what pressing it does."""
    rows: list[list[dict[str, Any]]] = []
    for row in (markup or {}).get("inline_keyboard", []) or []:
        out: list[dict[str, Any]] = []
        for button in row or []:
            if not isinstance(button, dict):
                continue
            view: dict[str, Any] = {"text": str(button.get("text", ""))}
            if "callback_data" in button:
                view["kind"], view["data"] = "callback", str(button["callback_data"])
            elif "url" in button:
                view["kind"], view["url"] = "url", safe_url(button["url"])
            elif "switch_inline_query_current_chat" in button:
                view["kind"] = "switch_inline"
                view["query"] = str(button["switch_inline_query_current_chat"])
            elif "switch_inline_query" in button:
                view["kind"], view["query"] = "switch_inline", str(button["switch_inline_query"])
            else:
                view["kind"] = "other"
            out.append(view)
        if out:
            rows.append(out)
    return rows


def _force_reply(markup: Any) -> dict[str, str] | None:
    """A ForceReply the bot sent: the page opens a reply to that message, as a client does."""
    if not isinstance(markup, dict) or not markup.get("force_reply"):
        return None
    return {"placeholder": str(markup.get("input_field_placeholder") or "")}


def message_view(message: dict[str, Any], *, outgoing: bool | None = None) -> dict[str, Any]:
    """One chat bubble: Message JSON (from the double) → the page's flat description.

    ``outgoing`` (sent by the bot) comes from ``chat_history`` entries or from the kind of event
    that carried the message; when absent it is read from ``message["from"]["is_bot"]``.
    """
    if outgoing is None:
        outgoing = bool(message.get("outgoing", (message.get("from") or {}).get("is_bot")))
    view: dict[str, Any] = {
        "id": int(message["message_id"]),
        "chat_id": int((message.get("chat") or {}).get("id", 0)),
        "from_bot": outgoing,
        "date": int(message.get("date", 0)),
        "edited": message.get("edit_date") is not None,
        "deleted": bool(message.get("deleted", False)),
        "text": None,
        "caption": None,
        "photo": None,
        "buttons": buttons_view(message.get("reply_markup")),
        "reply_to": (message.get("reply_to_message") or {}).get("message_id"),
        "force_reply": _force_reply(message.get("reply_keyboard")),
    }
    if message.get("text") is not None:
        view["text"] = entities_to_nodes(str(message["text"]), message.get("entities"))
    if message.get("caption") is not None:
        view["caption"] = entities_to_nodes(
            str(message["caption"]), message.get("caption_entities")
        )
    sizes = message.get("photo") or []
    if sizes:
        largest = sizes[-1]
        view["photo"] = {
            "url": photo_url(str(largest["file_id"])),
            "width": int(largest.get("width", 0)),
            "height": int(largest.get("height", 0)),
        }
    return view


def inline_result_view(result: dict[str, Any]) -> dict[str, Any]:
    """One row of the inline results list (an article or a cached photo) and what picking it
    would post, so the page can show the "via @bot" message the way Telegram would."""
    from devtools.botapi.html import EntityParseError, parse_html

    kind = str(result.get("type", ""))
    view: dict[str, Any] = {
        "id": str(result.get("id", "")),
        "type": kind,
        "title": str(result.get("title") or ""),
        "description": str(result.get("description") or ""),
        "thumb": None,
        "photo": None,
        "text": None,
        "caption": None,
    }

    def formatted(text: str, parse_mode: Any, entities: Any) -> list[Node]:
        if entities is None and str(parse_mode or "").lower() == "html":
            # The double would have rejected bad markup; show it raw rather than nothing.
            with contextlib.suppress(EntityParseError):
                text, entities = parse_html(text)
        return entities_to_nodes(text, entities)

    if kind == "photo" and result.get("photo_file_id"):
        url = photo_url(str(result["photo_file_id"]))
        view["thumb"] = view["photo"] = {"url": url, "width": 0, "height": 0}
    if result.get("caption") is not None:
        view["caption"] = formatted(
            str(result["caption"]), result.get("parse_mode"), result.get("caption_entities")
        )
    content = result.get("input_message_content")
    if isinstance(content, dict) and content.get("message_text") is not None:
        view["text"] = formatted(
            str(content["message_text"]), content.get("parse_mode"), content.get("entities")
        )
    view["buttons"] = buttons_view(result.get("reply_markup"))
    return view
