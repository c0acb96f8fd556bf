"""Redis client factory tuned for a cache that must degrade, not hang.

Short socket timeouts and *no retries*: redis-py 6+ retries by default, so a server that
accepts connections but never answers would cost several timeouts per call. For a cache the
right answer to a slow Redis is "go to the database now", so one call costs at most one
timeout, and the circuit breaker in CacheAside makes later calls cost nothing at all.

``REDIS_URL`` forms (``parse_redis_url`` checks them, ``bot.config`` reports a bad one):

- ``redis://[[user]:password@]host[:port][/db]``, ``rediss://...`` (TLS), ``unix:///path``:
  one server, as redis-py's ``from_url`` reads it;
- ``redis+sentinel://[[user]:password@]host[:26379][,host2[:26379]...]/service[/db]``
  (``rediss+sentinel://`` for TLS to the data nodes): the master of ``service`` as the
  sentinels name it, followed across failovers. The credentials are the data nodes'; add
  ``?sentinel_auth=true`` when the sentinels require the same ones (they usually require none,
  and AUTH against a sentinel without a password fails);
- ``redis-cluster://[[user]:password@]host[:6379][,host2...]`` (``rediss-cluster://`` for TLS):
  a Redis Cluster (any reachable nodes; the client discovers the rest). ``create_redis`` returns
  a redis-py ``RedisCluster`` for it (``is_cluster`` tells them apart). The cache engine runs on
  it: keys built by a ``KeySpace(hash_tags=True)`` keep what one script touches in one slot,
  and the auto-pipeline splits a batch into one pipeline per node (cache/slots.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal, cast
from urllib.parse import parse_qs, unquote, urlsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException, RedisError

__all__ = [
    "REDIS_ERRORS",
    "RedisTarget",
    "create_redis",
    "create_redis_cluster",
    "is_cluster",
    "is_cluster_url",
    "parse_redis_url",
]

#: Everything a Redis call (or the network under it) can raise. A cluster client raises
#: RedisClusterException, which is no RedisError, when no node answers or a slot has no node:
#: code that fails open on Redis errors must catch it too, on every deployment alike.
REDIS_ERRORS: Final = (RedisError, RedisClusterException, OSError, TimeoutError)

STANDALONE_SCHEMES = ("redis", "rediss", "unix")
SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
CLUSTER_SCHEMES = ("redis-cluster", "rediss-cluster")
_EXPECTED = "redis://, rediss://, unix://, redis+sentinel:// or redis-cluster://"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class RedisTarget:
    """What a REDIS_URL names. ``hosts``: the sentinels (sentinel), the startup nodes
    (cluster), or the one server (standalone, empty for a unix socket)."""

    kind: Literal["standalone", "sentinel", "cluster"]
    url: str
    hosts: tuple[tuple[str, int], ...] = ()
    service: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = None
    ssl: bool = False
    sentinel_auth: bool = False


def _host_port(item: str, default_port: int) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port``; error messages never echo the URL
    (it may carry a password)."""
    if item.startswith("["):
        host, sep, rest = item[1:].partition("]")
        if not sep or not host or (rest and not rest.startswith(":")):
            raise ValueError("bad IPv6 host (expected [addr]:port)")
        port_text = rest[1:] if rest else ""
    else:
        host, _, port_text = item.partition(":")
        if not host or ":" in port_text:
            raise ValueError("empty host or more than one ':' in a host")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError("bad port")
    return host, int(port_text)


def _parse_bool(name: str, values: list[str]) -> bool:
    value = values[-1].strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{name} must be true or false")


def parse_redis_url(url: str) -> RedisTarget:
    """Check a REDIS_URL and say what it names; ValueError with a one-line reason otherwise."""
    scheme, sep, _ = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in (*STANDALONE_SCHEMES, *SENTINEL_SCHEMES, *CLUSTER_SCHEMES):
        raise ValueError(f"not a Redis URL (expected {_EXPECTED}...)")
    parts = urlsplit(url)
    if scheme in STANDALONE_SCHEMES:
        if not parts.hostname and not parts.path:
            raise ValueError(f"not a Redis URL (expected {_EXPECTED}...)")
        try:
            port = parts.port
        except ValueError:
            raise ValueError("not a Redis URL: bad port") from None
        server: tuple[tuple[str, int], ...] = (
            ((parts.hostname, port or 6379),) if parts.hostname else ()
        )
        return RedisTarget("standalone", url, server, ssl=scheme == "rediss")

    kind: Literal["sentinel", "cluster"] = "sentinel" if scheme in SENTINEL_SCHEMES else "cluster"
    userinfo, at, hostlist = parts.netloc.rpartition("@")
    username = password = None
    if at:
        user_text, colon, password_text = userinfo.partition(":")
        username = unquote(user_text) or None
        password = unquote(password_text) if colon else None
    items = [item.strip() for item in hostlist.split(",")]
    if not items or any(not item for item in items):
        raise ValueError(f"a {kind} URL needs host[:port][,host[:port]...]")
    default_port = 26379 if kind == "sentinel" else 6379
    hosts = tuple(_host_port(item, default_port) for item in items)

    query = parse_qs(parts.query, keep_blank_values=True)
    allowed = {"sentinel_auth"} if kind == "sentinel" else set()
    unknown = sorted(set(query) - allowed)
    if unknown:
        raise ValueError(f"unknown option {unknown[0]!r} in a {kind} URL")
    segments = [s for s in parts.path.split("/") if s]
    if kind == "cluster":
        if segments not in ([], ["0"]):
            raise ValueError("a Redis Cluster has only database 0")
        return RedisTarget(
            "cluster",
            url,
            hosts,
            username=username,
            password=password,
            ssl=scheme.startswith("rediss"),
        )
    if not segments or len(segments) > 2:
        raise ValueError("a sentinel URL ends in /<service>[/<db>], e.g. /mymaster/0")
    db_text = segments[1] if len(segments) == 2 else "0"
    if not db_text.isdigit():
        raise ValueError("the database after the service name must be a number")
    return RedisTarget(
        "sentinel",
        url,
        hosts,
        service=unquote(segments[0]),
        db=int(db_text),
        username=username,
        password=password,
        ssl=scheme.startswith("rediss"),
        sentinel_auth=_parse_bool("sentinel_auth", query["sentinel_auth"])
        if "sentinel_auth" in query
        else False,
    )


def is_cluster(redis: object) -> bool:
    """Whether a client from ``create_redis`` talks to a Redis Cluster."""
    return isinstance(redis, RedisCluster)


def is_cluster_url(url: str | None) -> bool:
    """Whether a REDIS_URL names a Redis Cluster (False for None or a bad URL)."""
    if not url:
        return False
    try:
        return parse_redis_url(url).kind == "cluster"
    except ValueError:
        return False


class _BlockingSentinelConnectionPool(SentinelConnectionPool, BlockingConnectionPool):
    """The sentinel pool (asks the sentinels where the master is, drops connections to a
    demoted one) with BlockingConnectionPool's waiting for a free connection, so a burst
    behaves as it does on one server: callers wait ``timeout`` instead of failing at once.
    MRO: the sentinel pool's address logic, then the blocking get/release, then the base."""


class _SentinelRedis(Redis):
    """A master_for() client that also closes its Sentinel's own clients on aclose()."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        pool = self.connection_pool
        await super().aclose(close_connection_pool)
        manager = getattr(pool, "sentinel_manager", None)
        if isinstance(manager, Sentinel):
            await manager.aclose()


def create_redis(
    url: str,
    *,
    client_name: str = "horoscope-bot",
    socket_timeout: float = 0.25,
    socket_connect_timeout: float = 0.25,
    max_connections: int = 50,
    health_check_interval: int = 30,
    pool_timeout: float = 0.25,
) -> Redis:
    """Create an asyncio Redis client on its own connection pool (one server, Sentinel or a
    Cluster).

    hiredis is used automatically by redis-py when installed. ``decode_responses`` stays
    False: values are binary envelopes. ``client_name`` makes the bot's connections easy to
    find in ``CLIENT LIST`` when someone debugs production.

    A *blocking* pool: in a burst (a stampede of side-command reads, each on its own
    connection) callers wait up to ``pool_timeout`` for a free connection instead of failing
    at once with "too many connections" and falling back to Postgres.

    Sentinel: redis-py's ``Sentinel(...).master_for(service)``. Every new connection asks the
    sentinels (same timeouts, no retries) where the master is; a failover shows up as
    connection errors or READONLY replies (the old master demoted), which the cache engine
    treats like any Redis outage (breaker, loader); once the sentinels name the new master,
    new connections go there and idle ones to the old master are dropped.

    Cluster: a redis-py ``RedisCluster`` (see ``create_redis_cluster``), typed as ``Redis``
    because it offers the same command methods the bot uses (GET/SET/scripts/pipeline/pubsub);
    the engine checks ``is_cluster`` where the two differ (the auto-pipeline's wire access).
    """
    target = parse_redis_url(url)
    common: dict[str, Any] = {
        "client_name": client_name,
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_connect_timeout,
        "max_connections": max_connections,
        "timeout": pool_timeout,
        "health_check_interval": health_check_interval,
        "retry": Retry(NoBackoff(), 0),
        "retry_on_error": [],
        "decode_responses": False,
    }
    if target.kind == "standalone":
        pool: BlockingConnectionPool = BlockingConnectionPool.from_url(url, **common)
        return Redis.from_pool(pool)
    if target.kind == "cluster":
        cluster = create_redis_cluster(
            url,
            client_name=client_name,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_connect_timeout,
            max_connections=max_connections,
            health_check_interval=health_check_interval,
        )
        return cast("Redis", cluster)
    sentinel_kwargs: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_connect_timeout,
        "client_name": client_name,
    }
    if target.sentinel_auth:
        sentinel_kwargs.update(username=target.username, password=target.password)
    sentinel = Sentinel(list(target.hosts), sentinel_kwargs=sentinel_kwargs)
    assert target.service is not None
    client: Redis = sentinel.master_for(
        target.service,
        redis_class=_SentinelRedis,
        connection_pool_class=_BlockingSentinelConnectionPool,
        db=target.db,
        username=target.username,
        password=target.password,
        ssl=target.ssl,
        **common,
    )
    return client


def create_redis_cluster(
    url: str,
    *,
    client_name: str = "horoscope-bot",
    socket_timeout: float = 0.25,
    socket_connect_timeout: float = 0.25,
    max_connections: int = 50,
    health_check_interval: int = 30,
) -> RedisCluster:
    """A redis-py asyncio RedisCluster for a ``redis-cluster://`` URL.

    Same stance as ``create_redis``: short timeouts, and one immediate retry instead of
    redis-py's default (three, with exponential backoff that can sleep for seconds): the retry
    runs after the client has refreshed its slot map, which is what a failed-over node needs;
    anything longer is the caller's fallback to decide. ``max_connections`` is per node, and
    a node's pool does not wait: past it a call fails at once.
    """
    target = parse_redis_url(url)
    if target.kind != "cluster":
        raise ValueError("not a Redis Cluster URL (expected redis-cluster://host:port,...)")
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in target.hosts],
        username=target.username,
        password=target.password,
        ssl=target.ssl,
        client_name=client_name,
        socket_timeout=socket_timeout,
        socket_connect_timeout=socket_connect_timeout,
        max_connections=max_connections,
        health_check_interval=health_check_interval,
        retry=Retry(NoBackoff(), 1),
        decode_responses=False,
    )
