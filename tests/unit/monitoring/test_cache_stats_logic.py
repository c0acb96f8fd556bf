"""cache-stats decisions without a server: key classification, TTL spread, warnings, report.

The Redis I/O part runs here on fakeredis too, which has neither MEMORY USAGE nor INFO: that
doubles as the check that a server without them degrades to "-" instead of failing.
"""

from __future__ import annotations

import io
import json
import random

import fakeredis
import pytest

from bot.ops.cache_stats import (
    CacheReport,
    ScanResult,
    ServerInfo,
    build_report,
    classify_key,
    collect_report,
    policy_warnings,
    render_table,
    scan_keyspace,
    ttl_spread,
)


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("horo:v1:user:123", ("ns", "user")),
        ("horo:v1:horoscope:2026-11-21:aries:ru", ("ns", "horoscope")),
        ("horo:v1:user:123:lock", ("ns", "user")),
        ("horo:v1:buf:views:batch:1", ("ns", "buf")),
        ("horo:v1:", ("ns", "?")),
        ("horo:v0:user:1", ("version", "v0")),
        ("horo:junk", ("version", "?")),
        ("other:v1:user:1", None),
        ("horoscope:v1:user:1", None),
    ],
)
def test_classify_key(key: str, expected: tuple[str, str] | None) -> None:
    assert classify_key(key, "horo", "v1") == expected


def test_ttl_spread_ignores_keys_without_ttl_and_gone_keys() -> None:
    spread = ttl_spread([1000, -1, 3000, -2, 2000])
    assert spread is not None
    assert (spread.min, spread.median, spread.max, spread.count) == (1.0, 2.0, 3.0, 3)
    assert ttl_spread([-1, -2]) is None
    assert ttl_spread([]) is None


@pytest.mark.parametrize(
    ("maxmemory", "policy", "needles"),
    [
        (256 * 2**20, "volatile-lru", []),
        (256 * 2**20, "volatile-ttl", []),
        (256 * 2**20, "allkeys-lru", ["can evict buffers"]),
        (256 * 2**20, "allkeys-random", ["can evict buffers"]),
        (256 * 2**20, "noeviction", ["every write fails"]),
        (0, "volatile-lru", ["unbounded"]),
        (0, "allkeys-lfu", ["unbounded", "can evict buffers"]),
        (None, None, []),
        (256 * 2**20, "made-up", ["unknown maxmemory-policy"]),
    ],
)
def test_policy_warnings(maxmemory: int | None, policy: str | None, needles: list[str]) -> None:
    warnings = policy_warnings(maxmemory, policy)
    assert len(warnings) == len(needles)
    for warning, needle in zip(warnings, needles, strict=True):
        assert needle in warning


async def _plant(r: fakeredis.FakeAsyncRedis) -> None:
    for i in range(30):
        await r.set(f"horo:v1:user:{i}", b"u" * 10, px=60_000 + i)
    await r.set("horo:v1:user:3:lock", b"token", px=2000)
    await r.set("horo:v1:horoscope:2026-11-21:aries:ru", b"text", ex=3600)
    await r.hset("horo:v1:buf:views", mapping={"aries": 3})
    await r.sadd("horo:v1:buf:views:pending", "1")
    await r.set("horo:v0:user:1", b"old", ex=100)
    await r.set("horo:v0:buf:views", b"stranded")
    await r.set("elsewhere:v1:user:1", b"not ours")


async def test_scan_counts_namespaces_locks_versions_and_bounds_the_sample() -> None:
    r = fakeredis.FakeAsyncRedis()
    await _plant(r)
    scan = await scan_keyspace(r, "horo", "v1", 5, rng=random.Random(1))
    user = scan.namespaces["user"]
    assert (user.keys, user.locks, user.no_ttl, len(user.sample)) == (30, 1, 0, 5)
    assert len({key for key, _ in user.sample}) == 5
    assert all(not key.endswith(":lock") for key, _ in user.sample)
    assert scan.namespaces["horoscope"].keys == 1
    buf = scan.namespaces["buf"]
    assert buf.buffer and (buf.keys, buf.no_ttl, buf.with_ttl) == (2, 2, 0)
    assert {v: (s.keys, s.no_ttl) for v, s in scan.other_versions.items()} == {"v0": (2, 1)}
    assert "elsewhere" not in scan.namespaces


async def test_collect_report_on_a_server_without_memory_and_info() -> None:
    r = fakeredis.FakeAsyncRedis()
    await _plant(r)
    await r.set("horo:v1:horoscope:forever", b"no ttl")
    report = await collect_report(r, "horo", "v1", 10, rng=random.Random(2))
    rows = {row["namespace"]: row for row in report.namespaces}
    assert rows["user"]["keys"] == 30 and rows["user"]["avg_bytes"] is None
    assert rows["user"]["ttl_min_s"] is not None and rows["user"]["ttl_max_s"] <= 60.03
    assert rows["horoscope"]["no_ttl"] == 1
    assert rows["horoscope"]["no_ttl_examples"] == ["horo:v1:horoscope:forever"]
    assert [row["namespace"] for row in report.buffers] == ["buf"]
    assert report.keys_without_ttl == 1 and report.exit_code == 1
    assert not any("'buf'" in w for w in report.warnings)
    assert any("'v0'" in w for w in report.warnings)
    assert report.server["hit_ratio"] is None
    json.loads(json.dumps(report.to_dict()))  # JSON-serialisable as is


def _report(**info: object) -> CacheReport:
    scan = ScanResult()
    return build_report("horo", "v1", scan, {}, ServerInfo(**info))  # type: ignore[arg-type]


def test_report_exit_code_and_server_fields() -> None:
    report = _report(
        used_memory=10, maxmemory=0, maxmemory_policy="allkeys-lru", keyspace_hits=3,
        keyspace_misses=1, evicted_keys=7,
    )  # fmt: skip
    assert report.exit_code == 0
    assert report.server["hit_ratio"] == 0.75
    assert len(report.warnings) == 2  # unbounded + allkeys
    assert _report(keyspace_hits=0, keyspace_misses=0).server["hit_ratio"] is None


def test_buffer_with_ttl_is_warned_about() -> None:
    scan = ScanResult()
    from bot.ops.cache_stats import NamespaceStats

    ns = scan.namespaces["buf"] = NamespaceStats("buf", buffer=True)
    ns.add("horo:v1:buf:views", 5000, 10, random.Random(0))
    report = build_report("horo", "v1", scan, {"horo:v1:buf:views": 100}, ServerInfo())
    assert report.exit_code == 0
    assert report.buffers[0]["with_ttl"] == 1 and report.buffers[0]["est_bytes"] == 100
    assert any("buffer key(s)" in w for w in report.warnings)


async def test_render_table_shows_namespaces_and_warnings() -> None:
    r = fakeredis.FakeAsyncRedis()
    await _plant(r)
    report = await collect_report(r, "horo", "v1", 10)
    out = io.StringIO()
    render_table(report, out)
    text = out.getvalue()
    for needle in ("user", "horoscope", "Buffers", "v0", "keyspace hit ratio"):
        assert needle in text
    empty = io.StringIO()
    render_table(_report(maxmemory=0), empty)
    assert "(no keys)" in empty.getvalue() and "WARNING" in empty.getvalue()
