"""The load balancer (nginx and HAProxy): round-robin over the upstreams, a dead upstream is
skipped."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from aiohttp import web

from tests.servers import binaries
from tests.servers.loadbalancer import LoadBalancer

pytestmark = pytest.mark.timeout(60)


class Upstream:
    def __init__(self, name: str) -> None:
        self.name = name
        self.hits = 0
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def handle(self, _request: web.Request) -> web.Response:
        self.hits += 1
        return web.Response(text=self.name)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


@pytest.fixture
async def upstreams() -> AsyncIterator[list[Upstream]]:
    ups = [Upstream("a"), Upstream("b")]
    for up in ups:
        await up.start()
    yield ups
    for up in ups:
        await up.stop()


@pytest.mark.parametrize("kind", ["nginx", "haproxy"])
async def test_round_robin_then_a_dead_upstream_is_skipped(
    kind: str,
    upstreams: list[Upstream],
    load_balancer_factory: Callable[..., LoadBalancer],
) -> None:
    if getattr(binaries, kind)() is None:
        pytest.skip(f"{kind} is not installed (apt-get install {kind})")
    balancer = load_balancer_factory([u.port for u in upstreams], kind=kind)
    assert balancer.kind == kind
    async with httpx.AsyncClient(base_url=balancer.url, timeout=10) as client:
        answers: Counter[str] = Counter()
        for _ in range(10):
            response = await client.get("/hello")
            assert response.status_code == 200
            answers[response.text] += 1
        assert answers == {"a": 5, "b": 5}
        assert [u.hits for u in upstreams] == [5, 5]

        await upstreams[0].stop()  # instance "a" dies
        after: Counter[str] = Counter()
        for _ in range(6):
            response = await client.get("/hello")
            assert response.status_code == 200  # GET is retried on the live upstream
            after[response.text] += 1
        assert after == {"b": 6}
    assert "upstream=" in balancer.access_log.read_text()
