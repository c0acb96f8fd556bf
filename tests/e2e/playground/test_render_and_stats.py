"""Pure parts of the playground: entities → DOM tree, Message JSON → bubble, metrics → panel.

They live next to the browser test (this folder is the playground's) but need no browser and
no servers: the entity tree is where an injection or an off-by-one in UTF-16 offsets would hide.
"""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge

from devtools.botapi.html import parse_html
from devtools.playground.render import (
    buttons_view,
    entities_to_nodes,
    inline_result_view,
    message_view,
    safe_url,
)
from devtools.playground.stats import collect_stats, parse_metrics
from devtools.playground.web import sniff_image_type


def flat(nodes: list[dict[str, Any]]) -> str:
    """The text a browser would show for a node tree."""
    return "".join(n["text"] if "text" in n else flat(n["children"]) for n in nodes)


def shape(nodes: list[dict[str, Any]]) -> list[Any]:
    """Compact structure: "text" or (type, [children])."""
    return [n["text"] if "text" in n else (n["type"], shape(n["children"])) for n in nodes]


# ---------------------------------------------------------------- entities


def test_plain_text_is_one_leaf() -> None:
    assert entities_to_nodes("hello", None) == [{"text": "hello"}]
    assert entities_to_nodes("", []) == []


def test_markup_characters_stay_text() -> None:
    text, entities = parse_html(
        "<b>1 &lt; 2</b> &amp; <i>&lt;script&gt;alert(1)&lt;/script&gt;</i>"
    )
    nodes = entities_to_nodes(text, entities)
    assert shape(nodes) == [
        ("bold", ["1 < 2"]),
        " & ",
        ("italic", ["<script>alert(1)</script>"]),
    ]


def test_nested_entities_make_a_tree() -> None:
    text, entities = parse_html("<b>bold <i>both</i></b> tail")
    assert shape(entities_to_nodes(text, entities)) == [
        ("bold", ["bold ", ("italic", ["both"])]),
        " tail",
    ]


def test_utf16_offsets_with_astral_characters() -> None:
    # "♌" is one UTF-16 unit, "🔮" two: offsets after it must still land on the right letters.
    text, entities = parse_html("🔮 <b>♌ Лев</b> · сегодня")
    assert entities == [{"type": "bold", "offset": 3, "length": 5}]
    nodes = entities_to_nodes(text, entities)
    assert shape(nodes) == ["🔮 ", ("bold", ["♌ Лев"]), " · сегодня"]
    assert flat(nodes) == text


def test_overlapping_entities_are_split_not_dropped() -> None:
    entities = [
        {"type": "bold", "offset": 0, "length": 6},
        {"type": "italic", "offset": 3, "length": 6},
    ]
    nodes = entities_to_nodes("abcdefghi", entities)
    assert shape(nodes) == [("bold", ["abc", ("italic", ["def"])]), ("italic", ["ghi"])]
    assert flat(nodes) == "abcdefghi"


def test_bad_entities_are_ignored() -> None:
    entities: list[Any] = [
        {"type": "bold", "offset": 10, "length": 5},  # outside the text
        {"type": "italic", "offset": 1, "length": 0},  # empty
        {"type": "code"},  # malformed
        "junk",
        {"type": "underline", "offset": -2, "length": 4},  # clipped to the start
    ]
    assert shape(entities_to_nodes("abc", entities)) == [("underline", ["ab"]), "c"]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://example.com/a?b=1", "https://example.com/a?b=1"),
        ("http://x", "http://x"),
        ("tg://user?id=1", "tg://user?id=1"),
        ("javascript:alert(1)", None),
        (" JavaScript:alert(1)", None),
        ("data:text/html,<b>x</b>", None),
        ("", None),
        (None, None),
    ],
)
def test_safe_url(url: Any, expected: str | None) -> None:
    assert safe_url(url) == expected


def test_links_carry_only_safe_urls() -> None:
    text = "good bad site.org"
    entities = [
        {"type": "text_link", "offset": 0, "length": 4, "url": "https://ok.example"},
        {"type": "text_link", "offset": 5, "length": 3, "url": "javascript:alert(1)"},
        {"type": "url", "offset": 9, "length": 8},
    ]
    good, _, bad, _, bare = entities_to_nodes(text, entities)
    assert good["url"] == "https://ok.example"
    assert "url" not in bad
    assert bare["url"] == "https://site.org"


def test_pre_keeps_language() -> None:
    text, entities = parse_html('<pre><code class="language-python">x = 1</code></pre>')
    (node,) = entities_to_nodes(text, entities)
    assert node["type"] == "pre" and node["language"] == "python"


# ---------------------------------------------------------------- messages


def test_photo_message_view() -> None:
    caption, entities = parse_html("<b>♌ Leo</b> · today")
    message = {
        "message_id": 7,
        "from": {"id": 1, "is_bot": True, "first_name": "Bot"},
        "chat": {"id": 42, "type": "private"},
        "date": 1_700_000_000,
        "edit_date": 1_700_000_100,
        "photo": [
            {"file_id": "small", "file_unique_id": "s", "width": 90, "height": 90},
            {"file_id": "big/+id", "file_unique_id": "b", "width": 800, "height": 800},
        ],
        "caption": caption,
        "caption_entities": entities,
        "reply_markup": {
            "inline_keyboard": [
                [
                    {"text": "Today", "callback_data": "day:today"},
                    {"text": "Site", "url": "javascript:alert(1)"},
                ],
                [{"text": "Share", "switch_inline_query": "leo"}],
            ]
        },
    }
    view = message_view(message)
    assert view["id"] == 7 and view["chat_id"] == 42
    assert view["from_bot"] is True and view["edited"] is True and view["deleted"] is False
    assert view["photo"] == {"url": "/playground/photo/big%2F%2Bid", "width": 800, "height": 800}
    assert view["text"] is None
    assert shape(view["caption"]) == [("bold", ["♌ Leo"]), " · today"]
    assert view["buttons"] == [
        [
            {"text": "Today", "kind": "callback", "data": "day:today"},
            {"text": "Site", "kind": "url", "url": None},
        ],
        [{"text": "Share", "kind": "switch_inline", "query": "leo"}],
    ]


def test_user_message_view_and_explicit_direction() -> None:
    message = {
        "message_id": 3,
        "from": {"id": 42, "is_bot": False, "first_name": "Ann"},
        "chat": {"id": 42, "type": "private"},
        "date": 1,
        "text": "/start",
        "entities": [{"type": "bot_command", "offset": 0, "length": 6}],
    }
    view = message_view(message)
    assert view["from_bot"] is False
    assert shape(view["text"]) == [("bot_command", ["/start"])]
    assert message_view({**message, "outgoing": True})["from_bot"] is True
    assert message_view(message, outgoing=True)["from_bot"] is True


def test_force_reply_view() -> None:
    """A ForceReply (kept aside by the double, not part of Message JSON) reaches the page."""
    message = {
        "message_id": 5,
        "from": {"id": 1, "is_bot": True, "first_name": "Bot"},
        "chat": {"id": 42, "type": "private"},
        "date": 1,
        "text": "Which zone?",
    }
    assert message_view(message)["force_reply"] is None
    asked = {**message, "reply_keyboard": {"force_reply": True, "input_field_placeholder": "UTC"}}
    assert message_view(asked)["force_reply"] == {"placeholder": "UTC"}
    keyboard = {**message, "reply_keyboard": {"keyboard": [[{"text": "a"}]]}}
    assert message_view(keyboard)["force_reply"] is None


def test_buttons_view_of_nothing() -> None:
    assert buttons_view(None) == []
    assert buttons_view({"inline_keyboard": [[], ["junk"]]}) == []


def test_inline_results() -> None:
    photo = inline_result_view(
        {
            "type": "photo",
            "id": "leo:2026-11-21:en",
            "photo_file_id": "FILE",
            "title": "Leo",
            "description": "The day invites you…",
            "caption": "<b>♌ Leo</b> &amp; you",
            "parse_mode": "HTML",
        }
    )
    assert photo["thumb"]["url"] == "/playground/photo/FILE"
    assert shape(photo["caption"]) == [("bold", ["♌ Leo"]), " & you"]
    article = inline_result_view(
        {
            "type": "article",
            "id": "a",
            "title": "Leo",
            "input_message_content": {"message_text": "<i>x</i>", "parse_mode": "HTML"},
        }
    )
    assert article["photo"] is None and shape(article["text"]) == [("italic", ["x"])]
    broken = inline_result_view(
        {
            "type": "article",
            "id": "b",
            "title": "t",
            "input_message_content": {"message_text": "<b>oops", "parse_mode": "HTML"},
        }
    )
    assert flat(broken["text"]) == "<b>oops"  # shown raw, as text


def test_sniff_image_type() -> None:
    assert sniff_image_type(b"\xff\xd8\xff\xe0rest") == "image/jpeg"
    assert sniff_image_type(b"\x89PNG\r\n\x1a\nrest") == "image/png"
    assert sniff_image_type(b"RIFF\0\0\0\0WEBPVP8 ") == "image/webp"
    assert sniff_image_type(b"hello") == "application/octet-stream"


# ---------------------------------------------------------------- stats

EXPOSITION = """\
# HELP bot_image_sends_total Pictures sent
# TYPE bot_image_sends_total counter
bot_image_sends_total{method="upload"} 2.0
bot_image_sends_total{method="file_id"} 5.0
bot_image_sends_created{method="upload"} 1.7e9
# TYPE bot_file_id_fallbacks_total counter
bot_file_id_fallbacks_total 1.0
# TYPE cache_events_total counter
cache_events_total{event="hit",namespace="horoscope"} 9.0
cache_events_total{event="miss",namespace="horoscope"} 1.0
cache_events_total{event="load",namespace="horoscope"} 1.0
cache_events_total{event="negative_hit",namespace="fileid"} 1.0
cache_events_total{event="miss",namespace="fileid"} 1.0
cache_events_total{event="lock_waited",namespace="fileid"} 2.0
# TYPE cache_breaker_state gauge
cache_breaker_state 1.0
# TYPE bot_generations_total counter
bot_generations_total{generator="template",outcome="ok"} 72.0
# TYPE bot_push_total counter
bot_push_total{outcome="sent"} 3.0
# TYPE bot_updates_total counter
bot_updates_total{outcome="ok",type="message"} 4.0
bot_updates_total{outcome="throttled",type="message"} 1.0
bot_updates_total{outcome="ok",type="callback_query"} 2.0
# TYPE bot_job_runs_total counter
bot_job_runs_total{task="precompute",outcome="ok"} 1.0
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 1.5
"""


def test_parse_metrics() -> None:
    stats = parse_metrics(EXPOSITION)
    assert stats["images"] == {"upload": 2, "file_id": 5, "fallbacks": 1}
    fileid, horoscope = stats["cache"]["namespaces"]
    assert horoscope == {
        "namespace": "horoscope",
        "hit": 9,
        "miss": 1,
        "load": 1,
        "negative_hit": 0,
        "singleflight_joined": 0,
        "redis_error": 0,
        "other": 0,
        "hit_ratio": 0.9,
    }
    assert fileid["negative_hit"] == 1 and fileid["other"] == 2 and fileid["hit_ratio"] == 0.5
    assert stats["cache"]["hit_ratio"] == round(10 / 12, 4)
    assert stats["cache"]["breaker"] == "open"
    assert stats["generations"] == {"template:ok": 72}
    assert stats["pushes"] == {"sent": 3}
    assert stats["updates"] == {"callback_query": 2, "message": 5}
    assert stats["jobs"] == {"precompute:ok": 1}


def test_parse_metrics_of_nothing() -> None:
    stats = parse_metrics("")
    assert stats["images"] == {"upload": 0, "file_id": 0, "fallbacks": 0}
    assert stats["cache"] == {"namespaces": [], "hit_ratio": None, "breaker": "closed"}


def test_collect_stats_adds_registries_up_once_each() -> None:
    bot_registry, cache_registry = CollectorRegistry(), CollectorRegistry()
    sends = Counter("bot_image_sends", "x", ["method"], registry=bot_registry)
    sends.labels("file_id").inc(3)
    events = Counter("cache_events", "x", ["namespace", "event"], registry=cache_registry)
    events.labels("user", "hit").inc(4)
    Gauge("cache_breaker_state", "x", registry=cache_registry).set(0)
    stats = collect_stats([bot_registry, cache_registry, bot_registry])
    assert stats["images"]["file_id"] == 3  # the repeated registry is read once
    assert stats["cache"]["namespaces"][0]["hit"] == 4
