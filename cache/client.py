"""Redis client factory tuned for a cache that must degrade, not hang.

Short socket timeouts and *no retries*: redis-py 6+ retries by default, so a server that
accepts connections but never answers would cost several timeouts per call. For a cache the
right answer to a slow Redis is "go to the database now", so one call costs at most one
timeout, and the circuit breaker in CacheAside makes later calls cost nothing at all.
"""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

__all__ = ["create_redis"]


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
    """Create an asyncio Redis client on its own ConnectionPool.

    hiredis is used automatically by redis-py when installed. ``decode_responses`` stays
    False: values are binary envelopes. ``client_name`` makes the bot's connections easy to
    find in ``CLIENT LIST`` when someone debugs production.

    A *blocking* pool: in a burst (a stampede of side-command reads, each on its own
    connection) callers wait up to ``pool_timeout`` for a free connection instead of failing
    at once with "too many connections" and falling back to Postgres.
    """
    pool: BlockingConnectionPool = BlockingConnectionPool.from_url(
        url,
        client_name=client_name,
        socket_timeout=socket_timeout,
        socket_connect_timeout=socket_connect_timeout,
        max_connections=max_connections,
        timeout=pool_timeout,
        health_check_interval=health_check_interval,
        retry=Retry(NoBackoff(), 0),
        retry_on_error=[],
        decode_responses=False,
    )
    return Redis.from_pool(pool)
