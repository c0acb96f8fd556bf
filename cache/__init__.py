"""Redis-first cache-aside engine (knows nothing about users or horoscopes).

Typical use::

    redis = create_redis(settings.redis_url)
    cache = CacheAside(redis)
    ks = KeySpace("horo")
    user = await cache.get_or_load(ks.key("user", user_id), load_user, ttl=3600,
                                   codec=Codec(UserDTO), negative_ttl=60)
"""

from cache.aside import NOT_FOUND, CacheAside, Load, SideCommand, Ttl
from cache.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from cache.client import REDIS_ERRORS, create_redis
from cache.codec import Codec, CodecError
from cache.invalidation import flush_invalidations, invalidate_after_commit
from cache.keys import KeySpace, make_key, namespace_of
from cache.lock import RedisLock
from cache.metrics import CacheMetrics, default_metrics
from cache.singleflight import SingleFlight

__all__ = [
    "CLOSED",
    "HALF_OPEN",
    "NOT_FOUND",
    "OPEN",
    "REDIS_ERRORS",
    "CacheAside",
    "CacheMetrics",
    "CircuitBreaker",
    "Codec",
    "CodecError",
    "KeySpace",
    "Load",
    "RedisLock",
    "SideCommand",
    "SingleFlight",
    "Ttl",
    "create_redis",
    "default_metrics",
    "flush_invalidations",
    "invalidate_after_commit",
    "make_key",
    "namespace_of",
]
