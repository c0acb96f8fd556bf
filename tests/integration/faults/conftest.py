"""A TCP proxy in front of the run's Postgres, for tests that make it hang or go away."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.engine import make_url

from tests.faults import FaultProxy


@pytest.fixture
async def pg_proxy(database_url: str) -> AsyncIterator[FaultProxy]:
    url = make_url(database_url)
    proxy = await FaultProxy(url.host or "127.0.0.1", url.port or 5432).start()
    try:
        yield proxy
    finally:
        await proxy.aclose()


@pytest.fixture
def proxied_url(pg_proxy: FaultProxy, database_url: str) -> str:
    """The run's database, reached through ``pg_proxy``."""
    return pg_proxy.url_for(database_url)
