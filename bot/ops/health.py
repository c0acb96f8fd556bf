"""The bot's operations endpoint: /metrics, /healthz and /readyz on METRICS_ADDR.

Why one small aiohttp app inside the bot process (and not prometheus_client's own HTTP server):
aiohttp is already here for aiogram, the app lives on the bot's event loop so /readyz can use
the bot's own Redis client and engine (it checks what the bot actually uses, pools included), and
one port serves both Prometheus and the orchestrator's probes.

- ``/healthz``: liveness. 200 "ok" as long as the event loop answers; it touches no store, so a
  Redis or Postgres outage never gets a healthy process restarted.
- ``/readyz``: readiness. Redis PING and Postgres ``SELECT 1`` run concurrently, each bounded by
  a short timeout, so the probe answers in about one timeout even when a store hangs. 200 with
  ``{"redis": "ok", "postgres": "ok"}``; 503 with the reason in place of "ok" for each failed
  check. It pings Redis directly, not through the cache's circuit breaker: the breaker hides a
  Redis outage from users (by design), the probe must not hide it from the operator.
- ``/metrics``: Prometheus text format of bot.ops.metrics.REGISTRY.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from sqlalchemy import text

from bot.ops.metrics import REGISTRY

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from sqlalchemy.ext.asyncio import AsyncEngine

    from bot.config import Settings
    from bot.ops.stores import Stores

__all__ = [
    "DEFAULT_CHECK_TIMEOUT",
    "Check",
    "HealthServer",
    "build_health_app",
    "parse_addr",
    "run_checks",
    "serve_app",
    "start_health_server",
]

log = structlog.get_logger(__name__)

#: A readiness check: returns when healthy, raises (anything) when not.
Check = Callable[[], Awaitable[object]]

#: Seconds each readiness check may take. Well under compose's 5 s healthcheck timeout, and
#: long enough for a cold pool to open its first connection.
DEFAULT_CHECK_TIMEOUT = 2.0

_CHECKS_KEY: web.AppKey[dict[str, Check]] = web.AppKey("health_checks", dict)
_TIMEOUT_KEY: web.AppKey[float] = web.AppKey("health_timeout", float)
_REGISTRY_KEY: web.AppKey[CollectorRegistry] = web.AppKey("health_registry", CollectorRegistry)


def parse_addr(addr: str) -> tuple[str, int]:
    """Split ``host:port`` (``[::1]:9101`` for IPv6) into host and port."""
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"not host:port: {addr!r}")
    return host.strip("[]"), int(port)


def _reason(exc: Exception) -> str:
    """One short line for the JSON body: the exception type, and its message when it has one."""
    if isinstance(exc, TimeoutError):
        return "timeout"
    message = " ".join(str(exc).split())
    name = type(exc).__name__
    return (f"{name}: {message}" if message else name)[:200]


def redis_check(redis: Redis) -> Check:
    async def check() -> None:
        if not await redis.ping():
            raise RuntimeError("PING returned false")

    return check


def postgres_check(engine: AsyncEngine) -> Check:
    async def check() -> None:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    return check


async def run_checks(checks: Mapping[str, Check], per_check: float) -> dict[str, str]:
    """Run the checks concurrently, each within ``per_check`` s: "ok" or a reason per name."""

    async def one(check: Check) -> str:
        try:
            await asyncio.wait_for(check(), per_check)
        except Exception as exc:  # a probe reports any failure; cancellation still propagates
            return _reason(exc)
        return "ok"

    names = list(checks)
    results = await asyncio.gather(*(one(checks[name]) for name in names))
    return dict(zip(names, results, strict=True))


async def _healthz(_request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def _readyz(request: web.Request) -> web.Response:
    checks: dict[str, Check] = request.app[_CHECKS_KEY]
    results = await run_checks(checks, request.app[_TIMEOUT_KEY])
    ready = all(value == "ok" for value in results.values())
    if not ready:
        log.warning("readyz_failed", **results)
    return web.Response(
        text=json.dumps(results),
        status=200 if ready else 503,
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


async def _metrics(request: web.Request) -> web.Response:
    # generate_latest is synchronous but cheap (no I/O, the pool collector reads attributes).
    body = generate_latest(request.app[_REGISTRY_KEY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def build_health_app(
    *,
    redis: Redis | None,
    engine: AsyncEngine | None,
    registry: CollectorRegistry = REGISTRY,
    extra_checks: Mapping[str, Check] | None = None,
    timeout: float = DEFAULT_CHECK_TIMEOUT,
) -> web.Application:
    """The aiohttp app alone, for HealthServer and for tests (aiohttp's test client).

    A store passed as None is not checked (a process that has no Redis has nothing to probe).
    """
    checks: dict[str, Check] = {}
    if redis is not None:
        checks["redis"] = redis_check(redis)
    if engine is not None:
        checks["postgres"] = postgres_check(engine)
    checks.update(extra_checks or {})
    app = web.Application()
    app[_CHECKS_KEY] = checks
    app[_TIMEOUT_KEY] = timeout
    app[_REGISTRY_KEY] = registry
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    return app


async def serve_app(
    app: web.Application, host: str, port: int, *, shutdown_timeout: float
) -> tuple[web.AppRunner, str]:
    """Serve ``app`` on ``host:port`` (0: any free port); return its runner and bound base URL.

    Shared by the health server and the webhook server so both bind, clean up a failed bind
    and report the real port the same way. ``access_log=None``: requests every few seconds
    (probes, webhooks) would drown the bot's own log lines; metrics count them instead.
    """
    runner = web.AppRunner(
        app, access_log=None, handle_signals=False, shutdown_timeout=shutdown_timeout
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    bound: Any = runner.addresses[0] if runner.addresses else (host, port)
    url_host = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
    return runner, f"http://{url_host}:{bound[1]}"


class HealthServer:
    """Serves build_health_app on ``addr`` (``host:port``; port 0 picks a free one)."""

    def __init__(
        self,
        addr: str,
        *,
        redis: Redis | None,
        engine: AsyncEngine | None,
        registry: CollectorRegistry = REGISTRY,
        extra_checks: Mapping[str, Check] | None = None,
        timeout: float = DEFAULT_CHECK_TIMEOUT,
    ) -> None:
        self.host, self.port = parse_addr(addr)
        self.app = build_health_app(
            redis=redis,
            engine=engine,
            registry=registry,
            extra_checks=extra_checks,
            timeout=timeout,
        )
        self._runner: web.AppRunner | None = None
        self.url: str | None = None

    async def start(self) -> str:
        """Bind and serve; return the bound URL (``http://host:port``, the real port)."""
        if self._runner is not None:
            raise RuntimeError("HealthServer already started")
        self._runner, self.url = await serve_app(
            self.app, self.host, self.port, shutdown_timeout=1.0
        )
        log.info("health_server_started", url=self.url)
        return self.url

    async def stop(self) -> None:
        """Stop serving; safe to call twice or without start."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
            log.info("health_server_stopped", url=self.url)

    async def __aenter__(self) -> HealthServer:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()


async def start_health_server(
    settings: Settings,
    stores: Stores,
    *,
    registry: CollectorRegistry = REGISTRY,
    extra_checks: Mapping[str, Check] | None = None,
) -> HealthServer | None:
    """What the runner calls: pool metrics on, server started; None when METRICS_ADDR is empty.

    The caller keeps the returned server and awaits ``stop()`` on shutdown.
    """
    if not settings.metrics_addr:
        return None
    from bot.ops.pool_metrics import register_pool_metrics

    register_pool_metrics(stores.engine, stores.redis, registry=registry)
    server = HealthServer(
        settings.metrics_addr,
        redis=stores.redis,
        engine=stores.engine,
        registry=registry,
        extra_checks=extra_checks,
    )
    await server.start()
    return server
