"""`python -m bot cache-stats`: what is in the Redis cache, and is it safe under memory pressure.

Why this exists: the design's promises about Redis are checkable only in Redis itself. Every
cache entry must carry a TTL (or it lives forever and `volatile-lru` can never evict it), the
buffers must carry none (or they can be evicted before they reach Postgres), and the server's
`maxmemory-policy` must be one that evicts only keys with a TTL. This command checks all three,
and shows per namespace how many keys there are, roughly how much memory they take and how
their remaining TTLs are spread.

Layout: the Redis I/O (SCAN, PTTL, MEMORY USAGE, INFO) is in `scan_keyspace`, `sample_memory`
and `read_server_info`; everything that decides something (`classify_key`, `ttl_spread`,
`policy_warnings`, `build_report`) is pure and unit-tested without a server.

Cost on a production server: SCAN with COUNT 1000 (never KEYS, so the server is never blocked),
one pipelined PTTL per SCAN page (every key's TTL is checked, not only the sample's: one key
without a TTL is exactly what this command must not miss), and MEMORY USAGE only on up to
``--sample`` keys per namespace.
"""

from __future__ import annotations

import dataclasses
import json
import random
import statistics
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from redis.asyncio import Redis

from bot.config import Settings
from bot.ops.stores import LocalServers, open_stores
from cache.client import REDIS_ERRORS, is_cluster

__all__ = [
    "BUFFER_NAMESPACES",
    "CacheReport",
    "NamespaceStats",
    "ServerInfo",
    "TtlSpread",
    "build_report",
    "cache_stats_command",
    "classify_key",
    "collect_report",
    "policy_warnings",
    "read_server_info",
    "render_table",
    "sample_memory",
    "scan_keyspace",
    "ttl_spread",
]

#: Namespaces whose keys are buffers (view counters, last-seen stamps, their pending batches):
#: no TTL on purpose, so that volatile-* eviction can never drop data not yet in Postgres.
BUFFER_NAMESPACES = frozenset({"buf"})

#: Suffix of the cache engine's per-key load locks (``{key}:lock``, SET NX PX): short-lived,
#: counted apart so their sub-second TTLs do not distort a namespace's TTL spread.
LOCK_SUFFIX = ":lock"

SCAN_COUNT = 1000
#: Keys without a TTL listed by name per namespace; the count is always complete.
MAX_EXAMPLES = 10

#: PTTL answers that are not a remaining time.
PTTL_NO_TTL = -1
PTTL_GONE = -2

# -- pure logic ------------------------------------------------------------------------------


def classify_key(key: str, prefix: str, version: str) -> tuple[str, str] | None:
    """Where a key belongs: ("ns", namespace) under ``{prefix}:{version}:``, ("version", v) for
    another schema version of the same prefix (orphans of a version bump), None otherwise."""
    head = f"{prefix}:"
    if not key.startswith(head):
        return None
    rest = key[len(head) :]
    ver, sep, tail = rest.partition(":")
    if ver != version:
        return ("version", ver if sep else "?")
    namespace = tail.partition(":")[0]
    return ("ns", namespace or "?")


@dataclass(frozen=True)
class TtlSpread:
    """Remaining TTL over the sampled keys that have one, in seconds."""

    min: float
    median: float
    max: float
    count: int


def ttl_spread(pttls: Sequence[int]) -> TtlSpread | None:
    """min/median/max of PTTL values (ms); keys without a TTL or already gone are ignored."""
    live = [p for p in pttls if p >= 0]
    if not live:
        return None
    return TtlSpread(
        min=min(live) / 1000,
        median=float(statistics.median(live)) / 1000,
        max=max(live) / 1000,
        count=len(live),
    )


def policy_warnings(maxmemory: int | None, policy: str | None) -> list[str]:
    """What is wrong with the server's eviction set-up for a cache with TTL-less buffers.

    volatile-* (volatile-lru recommended) evicts only keys with a TTL, i.e. cache entries.
    allkeys-* may evict buffers: counts and stamps not yet flushed to Postgres would be lost.
    noeviction loses nothing but makes every write fail once memory is full, buffers included.
    maxmemory 0 means no bound at all: the cache grows until the machine runs out of memory.
    """
    out: list[str] = []
    if maxmemory is not None and maxmemory == 0:
        out.append(
            "maxmemory is 0 (unbounded): Redis grows until the host runs out of memory and "
            "eviction never happens; set maxmemory and maxmemory-policy volatile-lru"
        )
    if policy is None:
        return out
    if policy.startswith("allkeys-"):
        out.append(
            f"maxmemory-policy {policy} can evict buffers (keys without a TTL): counters not yet "
            "flushed to Postgres would be lost; use volatile-lru"
        )
    elif policy == "noeviction":
        out.append(
            "maxmemory-policy noeviction never loses buffers, but once maxmemory is reached every "
            "write fails (cache fills and buffer updates alike); volatile-lru is recommended"
        )
    elif not policy.startswith("volatile-"):
        out.append(f"unknown maxmemory-policy {policy!r}; volatile-lru is recommended")
    return out


@dataclass
class NamespaceStats:
    """What the scan saw of one namespace (filled by scan_keyspace, read by build_report)."""

    namespace: str
    buffer: bool
    keys: int = 0
    locks: int = 0
    no_ttl: int = 0
    with_ttl: int = 0
    no_ttl_examples: list[str] = field(default_factory=list)
    #: reservoir sample of (key, pttl) over the namespace's non-lock keys
    sample: list[tuple[str, int]] = field(default_factory=list)
    _seen: int = 0

    def add(self, key: str, pttl: int, sample_size: int, rng: random.Random) -> None:
        """Count one key; keep it in the reservoir with the probability that keeps it uniform."""
        if pttl == PTTL_GONE:  # expired or deleted between SCAN and PTTL
            return
        if key.endswith(LOCK_SUFFIX) and not self.buffer:
            self.locks += 1
            return
        self.keys += 1
        if pttl == PTTL_NO_TTL:
            self.no_ttl += 1
            if len(self.no_ttl_examples) < MAX_EXAMPLES:
                self.no_ttl_examples.append(key)
        else:
            self.with_ttl += 1
        if sample_size <= 0:
            return
        self._seen += 1
        if len(self.sample) < sample_size:
            self.sample.append((key, pttl))
        else:
            slot = rng.randrange(self._seen)
            if slot < sample_size:
                self.sample[slot] = (key, pttl)


@dataclass
class VersionStats:
    """Keys of another schema version under the same prefix."""

    version: str
    keys: int = 0
    no_ttl: int = 0


@dataclass
class ScanResult:
    namespaces: dict[str, NamespaceStats] = field(default_factory=dict)
    other_versions: dict[str, VersionStats] = field(default_factory=dict)


@dataclass(frozen=True)
class ServerInfo:
    """The INFO fields the report uses; None where the server did not say."""

    used_memory: int | None = None
    maxmemory: int | None = None
    maxmemory_policy: str | None = None
    evicted_keys: int | None = None
    keyspace_hits: int | None = None
    keyspace_misses: int | None = None

    @property
    def hit_ratio(self) -> float | None:
        """Server-wide keyspace_hits / (hits + misses) since the last restart/CONFIG RESETSTAT."""
        if self.keyspace_hits is None or self.keyspace_misses is None:
            return None
        total = self.keyspace_hits + self.keyspace_misses
        return self.keyspace_hits / total if total else None


@dataclass
class CacheReport:
    prefix: str
    version: str
    namespaces: list[dict[str, Any]]
    buffers: list[dict[str, Any]]
    other_versions: list[dict[str, Any]]
    server: dict[str, Any]
    warnings: list[str]
    #: cache keys (not buffers) of the current version without a TTL: the failure condition
    keys_without_ttl: int

    @property
    def exit_code(self) -> int:
        return 1 if self.keys_without_ttl else 0

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "exit_code": self.exit_code}


def build_report(
    prefix: str,
    version: str,
    scan: ScanResult,
    memory: Mapping[str, int | None],
    info: ServerInfo,
) -> CacheReport:
    """Turn raw scan/memory/INFO data into the report and its warnings (no I/O)."""
    cache_rows: list[dict[str, Any]] = []
    buffer_rows: list[dict[str, Any]] = []
    warnings: list[str] = []
    keys_without_ttl = 0
    for name in sorted(scan.namespaces):
        ns = scan.namespaces[name]
        sizes = [s for key, _ in ns.sample if (s := memory.get(key)) is not None]
        avg = sum(sizes) / len(sizes) if sizes else None
        spread = ttl_spread([pttl for _, pttl in ns.sample])
        row: dict[str, Any] = {
            "namespace": name,
            "keys": ns.keys,
            "locks": ns.locks,
            "sampled": len(sizes),
            "avg_bytes": round(avg) if avg is not None else None,
            "est_bytes": round(avg * ns.keys) if avg is not None else None,
            "ttl_min_s": spread.min if spread else None,
            "ttl_median_s": spread.median if spread else None,
            "ttl_max_s": spread.max if spread else None,
            "no_ttl": ns.no_ttl,
        }
        if ns.buffer:
            # TTL-less is the norm here: no examples, but say how many carry a TTL by mistake.
            row["with_ttl"] = ns.with_ttl
            buffer_rows.append(row)
            if ns.with_ttl:
                warnings.append(
                    f"{ns.with_ttl} buffer key(s) in namespace {name!r} carry a TTL: they can "
                    "expire or be evicted before they are flushed to Postgres"
                )
        else:
            row["no_ttl_examples"] = list(ns.no_ttl_examples)
            cache_rows.append(row)
            if ns.no_ttl:
                keys_without_ttl += ns.no_ttl
                examples = ", ".join(ns.no_ttl_examples[:3])
                warnings.append(
                    f"{ns.no_ttl} cache key(s) in namespace {name!r} have no TTL and will never "
                    f"expire or be evicted by volatile-*: {examples}"
                )
    version_rows = [dataclasses.asdict(scan.other_versions[v]) for v in sorted(scan.other_versions)]
    for row in version_rows:
        if row["no_ttl"]:
            warnings.append(
                f"{row['no_ttl']} key(s) of schema version {row['version']!r} have no TTL: "
                "left over from an older version (buffers not flushed?), they never expire"
            )
    warnings.extend(policy_warnings(info.maxmemory, info.maxmemory_policy))
    server = {**dataclasses.asdict(info), "hit_ratio": info.hit_ratio}
    return CacheReport(
        prefix=prefix,
        version=version,
        namespaces=cache_rows,
        buffers=buffer_rows,
        other_versions=version_rows,
        server=server,
        warnings=warnings,
        keys_without_ttl=keys_without_ttl,
    )


# -- Redis I/O -------------------------------------------------------------------------------


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else value


async def scan_keyspace(
    redis: Redis,
    prefix: str,
    version: str,
    sample: int,
    *,
    rng: random.Random | None = None,
) -> ScanResult:
    """SCAN ``{prefix}:*`` (COUNT 1000) and PTTL every key found, one pipeline per page.

    The whole prefix is scanned, not only the current version: SCAN walks the whole keyspace
    whatever MATCH says, so seeing orphans of older versions costs only their transfer.
    """
    rng = rng or random.Random()
    result = ScanResult()
    async for raw_keys in _pages(redis, f"{prefix}:*"):
        if raw_keys:
            keys = [_text(k) for k in raw_keys]
            async with redis.pipeline(transaction=False) as pipe:
                for key in raw_keys:
                    pipe.pttl(key)
                pttls = await pipe.execute()
            for key, pttl in zip(keys, pttls, strict=True):
                place = classify_key(key, prefix, version)
                if place is None:
                    continue
                kind, name = place
                if kind == "version":
                    stats = result.other_versions.setdefault(name, VersionStats(name))
                    if pttl != PTTL_GONE:
                        stats.keys += 1
                        stats.no_ttl += pttl == PTTL_NO_TTL
                    continue
                ns = result.namespaces.get(name)
                if ns is None:
                    ns = result.namespaces[name] = NamespaceStats(
                        name, buffer=name in BUFFER_NAMESPACES
                    )
                ns.add(key, int(pttl), sample, rng)
    return result


async def _pages(redis: Redis, match: str) -> AsyncIterator[list[Any]]:
    """SCAN pages of up to SCAN_COUNT keys. A Redis Cluster is scanned on every primary
    (redis-py's cluster ``scan_iter``; its ``scan`` takes a cursor per node)."""
    if is_cluster(redis):
        page: list[Any] = []
        async for key in redis.scan_iter(match=match, count=SCAN_COUNT):
            page.append(key)
            if len(page) >= SCAN_COUNT:
                yield page
                page = []
        if page:
            yield page
        return
    cursor = 0
    while True:
        cursor, raw_keys = await redis.scan(cursor, match=match, count=SCAN_COUNT)
        yield raw_keys
        if not cursor:
            return


async def sample_memory(redis: Redis, keys: Sequence[str]) -> dict[str, int | None]:
    """MEMORY USAGE of each key (pipelined); None for a vanished key or a server without it."""
    out: dict[str, int | None] = {}
    for start in range(0, len(keys), SCAN_COUNT):
        chunk = keys[start : start + SCAN_COUNT]
        async with redis.pipeline(transaction=False) as pipe:
            for key in chunk:
                pipe.memory_usage(key)
            answers = await pipe.execute(raise_on_error=False)
        for key, answer in zip(chunk, answers, strict=True):
            out[key] = answer if isinstance(answer, int) else None
    return out


def _int(section: Mapping[str, Any], name: str) -> int | None:
    value = section.get(name)
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


async def read_server_info(redis: Redis) -> ServerInfo:
    """INFO memory + INFO stats (not CONFIG GET: managed Redis often disables CONFIG)."""
    try:
        mem = await redis.info("memory")
    except REDIS_ERRORS:
        mem = {}
    try:
        stats = await redis.info("stats")
    except REDIS_ERRORS:
        stats = {}
    policy = mem.get("maxmemory_policy")
    return ServerInfo(
        used_memory=_int(mem, "used_memory"),
        maxmemory=_int(mem, "maxmemory"),
        maxmemory_policy=_text(policy) if policy is not None else None,
        evicted_keys=_int(stats, "evicted_keys"),
        keyspace_hits=_int(stats, "keyspace_hits"),
        keyspace_misses=_int(stats, "keyspace_misses"),
    )


async def collect_report(
    redis: Redis, prefix: str, version: str, sample: int, *, rng: random.Random | None = None
) -> CacheReport:
    """All the I/O in one place: scan, sample memory, read INFO; then build the report."""
    scan = await scan_keyspace(redis, prefix, version, max(0, sample), rng=rng)
    sampled = [key for ns in scan.namespaces.values() for key, _ in ns.sample]
    memory = await sample_memory(redis, sampled)
    info = await read_server_info(redis)
    return build_report(prefix, version, scan, memory, info)


# -- output ----------------------------------------------------------------------------------


def _bytes(value: int | None) -> str:
    if value is None:
        return "-"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{value} B"  # pragma: no cover


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 120:
        return f"{value:.1f}s"
    if value < 7200:
        return f"{value / 60:.1f}m"
    return f"{value / 3600:.1f}h"


def render_table(report: CacheReport, out: TextIO) -> None:
    """The human view: one table for cache namespaces, one for buffers, then server, warnings."""
    from rich.console import Console
    from rich.table import Table

    # Piped output gets a fixed width that fits the table, not rich's 80-column default.
    width = None if out.isatty() else 120
    console = Console(file=out, highlight=False, width=width)
    table = Table(title=f"Cache {report.prefix}:{report.version}:*")
    for name in ("namespace", "keys", "locks", "sampled", "avg size", "est. memory"):
        table.add_column(name, justify="left" if name == "namespace" else "right")
    table.add_column("TTL min / median / max", justify="right")
    table.add_column("no TTL", justify="right")
    for row in report.namespaces:
        table.add_row(
            row["namespace"],
            str(row["keys"]),
            str(row["locks"]),
            str(row["sampled"]),
            _bytes(row["avg_bytes"]),
            _bytes(row["est_bytes"]),
            " / ".join(_seconds(row[f"ttl_{k}_s"]) for k in ("min", "median", "max")),
            f"[red]{row['no_ttl']}[/red]" if row["no_ttl"] else "0",
        )
    if not report.namespaces:
        table.add_row("(no keys)", *[""] * 7)
    console.print(table)
    if report.buffers:
        buffers = Table(title="Buffers (no TTL by design, never evicted by volatile-*)")
        for name in ("namespace", "keys", "sampled", "avg", "est. memory", "with TTL"):
            buffers.add_column(name, justify="left" if name == "namespace" else "right")
        for row in report.buffers:
            buffers.add_row(
                row["namespace"],
                str(row["keys"]),
                str(row["sampled"]),
                _bytes(row["avg_bytes"]),
                _bytes(row["est_bytes"]),
                f"[yellow]{row['with_ttl']}[/yellow]" if row["with_ttl"] else "0",
            )
        console.print(buffers)
    for row in report.other_versions:
        console.print(
            f"other schema version {row['version']}: {row['keys']} keys "
            f"({row['no_ttl']} without TTL)"
        )
    server = report.server
    ratio = server["hit_ratio"]
    maxmemory = server["maxmemory"]
    console.print(
        f"Redis: used_memory {_bytes(server['used_memory'])}, maxmemory "
        f"{'unbounded' if maxmemory == 0 else _bytes(maxmemory)}, policy "
        f"{server['maxmemory_policy'] or '-'}, evicted_keys "
        f"{server['evicted_keys'] if server['evicted_keys'] is not None else '-'}, "
        f"keyspace hit ratio {f'{ratio:.1%}' if ratio is not None else '-'} (whole server)"
    )
    for warning in report.warnings:
        console.print(f"[yellow]WARNING[/yellow] {warning}")


async def cache_stats_command(
    settings: Settings,
    *,
    as_json: bool,
    sample: int,
    out: TextIO | None = None,
    local: LocalServers | None = None,
) -> int:
    """Open the stores without migrating, inspect, print; 1 when a cache key has no TTL."""
    out = out if out is not None else sys.stdout
    # An inspection tool may wait longer per command than the bot's 0.25 s request budget.
    settings = settings.model_copy(
        update={"redis_socket_timeout": max(settings.redis_socket_timeout, 2.0)}
    )
    async with open_stores(settings, migrate=False, local=local) as stores:
        report = await collect_report(
            stores.redis, settings.cache_prefix, settings.cache_schema_version, sample
        )
    if as_json:
        out.write(json.dumps(report.to_dict(), indent=2) + "\n")
    else:
        render_table(report, out)
    return report.exit_code
