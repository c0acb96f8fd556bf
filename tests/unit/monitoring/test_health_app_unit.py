"""The health app's behaviour with injected checks (no stores): status codes, concurrency."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import aiohttp
import pytest
from prometheus_client import CollectorRegistry, Counter

from bot.ops.health import HealthServer, parse_addr, run_checks


async def _ok() -> None:
    return None


async def _boom() -> None:
    raise ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 1)")


async def _hang() -> None:
    await asyncio.sleep(30)


@pytest.mark.parametrize(
    ("addr", "expected"),
    [
        ("127.0.0.1:9101", ("127.0.0.1", 9101)),
        ("[::1]:0", ("::1", 0)),
        ("0.0.0.0:1", ("0.0.0.0", 1)),
    ],
)
def test_parse_addr(addr: str, expected: tuple[str, int]) -> None:
    assert parse_addr(addr) == expected


def test_parse_addr_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        parse_addr("9101")


async def test_checks_run_concurrently_each_with_its_timeout() -> None:
    running: list[str] = []
    both = asyncio.Event()

    def hang(name: str) -> Callable[[], Awaitable[None]]:
        async def check() -> None:
            running.append(name)
            if len(running) == 2:
                both.set()
            await asyncio.sleep(30)

        return check

    results = await run_checks({"a": hang("a"), "b": hang("b"), "c": _ok, "d": _boom}, 0.2)
    assert both.is_set()  # both hung checks were running at once: one timeout, not the sum
    assert results["a"] == results["b"] == "timeout"
    assert results["c"] == "ok"
    assert results["d"].startswith("ConnectionRefusedError")


async def test_server_endpoints_with_injected_checks() -> None:
    registry = CollectorRegistry()
    Counter("probe_total", "a metric only this test's registry has", registry=registry).inc()
    checks = {"extra": _ok}
    async with HealthServer(
        "127.0.0.1:0", redis=None, engine=None, registry=registry, extra_checks=checks
    ) as server:
        assert server.url is not None and not server.url.endswith(":0")
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{server.url}/healthz") as resp:
                assert (resp.status, await resp.text()) == (200, "ok")
            async with http.get(f"{server.url}/readyz") as resp:
                assert resp.status == 200
                assert await resp.json() == {"extra": "ok"}
            async with http.get(f"{server.url}/metrics") as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"].startswith("text/plain")
                assert "probe_total 1.0" in await resp.text()
    # A failing extra check makes /readyz 503 with its reason.
    slow = HealthServer(
        "127.0.0.1:0",
        redis=None,
        engine=None,
        registry=registry,
        extra_checks={"slow": _hang, "fine": _ok},
        timeout=0.1,
    )
    async with slow, aiohttp.ClientSession() as http, http.get(f"{slow.url}/readyz") as resp:
        assert resp.status == 503
        assert json.loads(await resp.text()) == {"slow": "timeout", "fine": "ok"}


async def test_stop_is_idempotent_and_start_twice_fails() -> None:
    server = HealthServer("127.0.0.1:0", redis=None, engine=None, registry=CollectorRegistry())
    await server.stop()  # never started: no-op
    await server.start()
    with pytest.raises(RuntimeError):
        await server.start()
    await server.stop()
    await server.stop()
