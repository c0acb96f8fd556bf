"""Telegram-style parse_mode=HTML parsing for the Bot API double.

Real Telegram rejects text whose markup it cannot parse with
``400 Bad Request: can't parse entities: ...``. Generated horoscope text that is not escaped
is exactly the bug this is meant to catch, so the parser is deliberately a little stricter than
Telegram: a bare ``&`` that does not start a supported entity is rejected too (Telegram would
sometimes let it through, but a bot that relies on that is one unlucky character away from an
error). Offsets in the produced entities are UTF-16 code units, like Telegram's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["EntityParseError", "escape", "parse_html", "utf16_len"]

_SIMPLE_TAGS: dict[str, str] = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "code": "code",
    "pre": "pre",
    "tg-spoiler": "spoiler",
    "blockquote": "blockquote",
}
_ALL_TAGS = {*_SIMPLE_TAGS, "a", "span", "tg-emoji"}
_NAMED_ENTITIES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
_ENTITY_RE = re.compile(r"&(?:#(\d{1,7})|#[xX]([0-9a-fA-F]{1,6})|([a-zA-Z]+));")
_TAG_NAME_RE = re.compile(r"[a-zA-Z][a-zA-Z0-9-]*")
_ATTR_RE = re.compile(r"\s*([a-zA-Z_][a-zA-Z0-9_-]*)(?:\s*=\s*(\"[^\"]*\"|'[^']*'|[^\s>]+))?")


class EntityParseError(ValueError):
    """The text is not valid Telegram HTML; ``str(err)`` is Telegram's detail message."""


def utf16_len(text: str) -> int:
    """Length in UTF-16 code units: the unit Telegram uses for entity offsets and lengths."""
    return len(text.encode("utf-16-le")) // 2


def escape(text: str) -> str:
    """Escape text for parse_mode=HTML the way Telegram documents it (&, <, >, ")."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@dataclass
class _Open:
    name: str
    byte_offset: int
    start: int  # UTF-16 offset in the output text
    attrs: dict[str, str] = field(default_factory=dict)


def _byte_offset(text: str, index: int) -> int:
    return len(text[:index].encode("utf-8"))


def _decode_entity(text: str, i: int) -> tuple[str, int]:
    """Decode the entity starting at ``text[i] == '&'``; return (chars, next index)."""
    m = _ENTITY_RE.match(text, i)
    if m is None:
        raise EntityParseError(
            f"Can't find end of the entity starting at byte offset {_byte_offset(text, i)}"
        )
    dec, hexa, name = m.groups()
    if name is not None:
        if name not in _NAMED_ENTITIES:
            raise EntityParseError(
                f'Unsupported HTML entity "&{name};" at byte offset {_byte_offset(text, i)}'
            )
        return _NAMED_ENTITIES[name], m.end()
    code = int(dec) if dec is not None else int(hexa, 16)
    if code == 0 or code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
        raise EntityParseError(f"Invalid HTML entity at byte offset {_byte_offset(text, i)}")
    return chr(code), m.end()


def _parse_attrs(raw: str, tag_offset: int) -> dict[str, str]:
    attrs: dict[str, str] = {}
    pos = 0
    raw = raw.rstrip("/ \t\r\n")
    while pos < len(raw):
        m = _ATTR_RE.match(raw, pos)
        if m is None or m.end() == pos:
            raise EntityParseError(
                f"Expected equal sign in declaration of an attribute of a tag "
                f"at byte offset {tag_offset}"
            )
        value = m.group(2) or ""
        if value[:1] in ("'", '"'):
            value = value[1:-1]
        attrs[m.group(1).lower()] = _unescape_attr(value)
        pos = m.end()
    return attrs


def _unescape_attr(value: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(value):
        if value[i] == "&":
            ch, i = _decode_entity(value, i)
            out.append(ch)
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


def _entity_for(tag: _Open, end: int) -> dict[str, Any] | None:
    """Build the MessageEntity for a closed tag, or None for tags that produce none."""
    length = end - tag.start
    if length <= 0:
        return None
    base: dict[str, Any] = {"offset": tag.start, "length": length}
    if tag.name == "a":
        href = tag.attrs.get("href")
        if not href:
            return None
        return {"type": "text_link", **base, "url": href}
    if tag.name == "span":
        return {"type": "spoiler", **base}
    if tag.name == "tg-emoji":
        return {"type": "custom_emoji", **base, "custom_emoji_id": tag.attrs.get("emoji-id", "")}
    if tag.name == "blockquote" and "expandable" in tag.attrs:
        return {"type": "expandable_blockquote", **base}
    return {"type": _SIMPLE_TAGS[tag.name], **base}


def parse_html(text: str) -> tuple[str, list[dict[str, Any]]]:
    """Parse Telegram HTML into (plain text, entities) or raise :class:`EntityParseError`.

    Returning the entities (not just validating) lets the double answer with the same
    ``text`` + ``entities`` shape Telegram does, so a bot reading its own messages back sees the
    stripped text.
    """
    out: list[str] = []
    out_len = 0  # UTF-16 length of the output so far
    stack: list[_Open] = []
    entities: list[dict[str, Any]] = []
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "&":
            decoded, i = _decode_entity(text, i)
            out.append(decoded)
            out_len += utf16_len(decoded)
            continue
        if ch != "<":
            out.append(ch)
            out_len += 2 if ord(ch) > 0xFFFF else 1
            i += 1
            continue
        tag_offset = _byte_offset(text, i)
        close = text.find(">", i)
        if close == -1:
            raise EntityParseError(f"Unclosed start tag at byte offset {tag_offset}")
        inner = text[i + 1 : close]
        if inner.startswith("/"):
            name = inner[1:].strip().lower()
            if not stack:
                raise EntityParseError(f"Unexpected end tag at byte offset {tag_offset}")
            top = stack[-1]
            if name and name != top.name:
                raise EntityParseError(
                    f'Unmatched end tag at byte offset {tag_offset}, expected "</{top.name}>", '
                    f'found "</{name}>"'
                )
            stack.pop()
            entity = _entity_for(top, out_len)
            if entity is not None:
                if entity["type"] == "code" and stack and stack[-1].name == "pre":
                    lang = top.attrs.get("class", "")
                    if lang.startswith("language-"):
                        stack[-1].attrs["language"] = lang[len("language-") :]
                else:
                    if entity["type"] == "pre" and top.attrs.get("language"):
                        entity["language"] = top.attrs["language"]
                    entities.append(entity)
            i = close + 1
            continue
        m = _TAG_NAME_RE.match(inner)
        name = m.group(0).lower() if m else ""
        if name not in _ALL_TAGS:
            raise EntityParseError(f'Unsupported start tag "{name}" at byte offset {tag_offset}')
        attrs = _parse_attrs(inner[len(name) :], tag_offset)
        if name == "span" and attrs.get("class") != "tg-spoiler":
            raise EntityParseError(f'Unsupported start tag "{name}" at byte offset {tag_offset}')
        stack.append(_Open(name=name, byte_offset=tag_offset, start=out_len, attrs=attrs))
        i = close + 1
    if stack:
        raise EntityParseError(f'Can\'t find end tag corresponding to start tag "{stack[-1].name}"')
    entities.sort(key=lambda e: (e["offset"], -e["length"]))
    return "".join(out), entities
