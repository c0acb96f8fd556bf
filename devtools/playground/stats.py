"""The data-layer side panel: the bot's Prometheus metrics, summarised into a small JSON.

The playground exists to make the cache visible: a picture sent by file_id instead of a new
upload, a horoscope read from Redis instead of Postgres or the generator. Those facts are
already counted for Prometheus, so the panel reads the very same numbers (the exposition text
of ``bot.ops.metrics.REGISTRY``, parsed back) instead of keeping a second set of counters that could
drift from what Grafana would show.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

__all__ = ["CACHE_EVENTS_SHOWN", "collect_stats", "parse_metrics", "summarize"]

#: Cache events the panel shows as columns, in this order (others are kept under "other").
CACHE_EVENTS_SHOWN = ("hit", "miss", "load", "negative_hit", "singleflight_joined", "redis_error")


def _samples(text: str) -> Iterable[Sample]:
    for family in text_string_to_metric_families(text):
        yield from family.samples


def parse_metrics(text: str) -> dict[str, Any]:
    """Prometheus exposition text → the panel's figures (missing metrics count as zero).

    Only ``*_total`` samples of counters are read (not ``*_created``), so the figures are the
    same whichever prometheus-client version wrote the text.
    """
    images: dict[str, float] = defaultdict(float)
    cache: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    generations: dict[str, float] = defaultdict(float)
    pushes: dict[str, float] = defaultdict(float)
    updates: dict[str, float] = defaultdict(float)
    jobs: dict[str, float] = defaultdict(float)
    fallbacks = 0.0
    breaker = 0.0
    for sample in _samples(text):
        name, labels, value = sample.name, sample.labels, float(sample.value)
        if name == "bot_image_sends_total":
            images[labels.get("method", "?")] += value
        elif name == "bot_file_id_fallbacks_total":
            fallbacks += value
        elif name == "cache_events_total":
            cache[labels.get("namespace", "?")][labels.get("event", "?")] += value
        elif name == "cache_breaker_state":
            breaker = value
        elif name == "bot_generations_total":
            key = f"{labels.get('generator', '?')}:{labels.get('outcome', '?')}"
            generations[key] += value
        elif name == "bot_push_total":
            pushes[labels.get("outcome", "?")] += value
        elif name == "bot_updates_total":
            updates[labels.get("type", "?")] += value
        elif name == "bot_job_runs_total":
            jobs[f"{labels.get('task', '?')}:{labels.get('outcome', '?')}"] += value
    return summarize(
        images=images,
        fallbacks=fallbacks,
        cache=cache,
        breaker=breaker,
        generations=generations,
        pushes=pushes,
        updates=updates,
        jobs=jobs,
    )


def _ratio(hits: float, misses: float) -> float | None:
    lookups = hits + misses
    return round(hits / lookups, 4) if lookups else None


def summarize(
    *,
    images: dict[str, float],
    fallbacks: float,
    cache: dict[str, dict[str, float]],
    breaker: float,
    generations: dict[str, float],
    pushes: dict[str, float],
    updates: dict[str, float],
    jobs: dict[str, float],
) -> dict[str, Any]:
    """Shape the figures for the page: integers, sorted keys, hit ratio per namespace."""
    namespaces = []
    for namespace in sorted(cache):
        events = cache[namespace]
        row: dict[str, Any] = {"namespace": namespace}
        for event in CACHE_EVENTS_SHOWN:
            row[event] = int(events.get(event, 0))
        row["other"] = int(sum(v for k, v in events.items() if k not in CACHE_EVENTS_SHOWN))
        hits = events.get("hit", 0.0) + events.get("negative_hit", 0.0)
        row["hit_ratio"] = _ratio(hits, events.get("miss", 0.0))
        namespaces.append(row)
    totals_hit = sum(r["hit"] + r["negative_hit"] for r in namespaces)
    totals_miss = sum(r["miss"] for r in namespaces)
    return {
        "images": {
            "upload": int(images.get("upload", 0)),
            "file_id": int(images.get("file_id", 0)),
            "fallbacks": int(fallbacks),
        },
        "cache": {
            "namespaces": namespaces,
            "hit_ratio": _ratio(totals_hit, totals_miss),
            "breaker": {0: "closed", 1: "open", 2: "half-open"}.get(int(breaker), "?"),
        },
        "generations": {k: int(v) for k, v in sorted(generations.items())},
        "pushes": {k: int(v) for k, v in sorted(pushes.items())},
        "updates": {k: int(v) for k, v in sorted(updates.items())},
        "jobs": {k: int(v) for k, v in sorted(jobs.items())},
    }


def collect_stats(registries: Iterable[CollectorRegistry]) -> dict[str, Any]:
    """The panel's figures from registries in this process, added up.

    The bot process keeps everything on ``bot.ops.metrics.REGISTRY`` (the cache engine's metrics
    included); several registries (tests, embedders with their own) are added up, each read
    once even when passed twice.
    """
    seen: set[int] = set()
    texts = []
    for registry in registries:
        if id(registry) not in seen:
            seen.add(id(registry))
            texts.append(generate_latest(registry).decode("utf-8"))
    return parse_metrics("".join(texts))
