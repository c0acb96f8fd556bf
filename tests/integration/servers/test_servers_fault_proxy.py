"""The TCP fault proxy: pass, refuse, hang, cut, each doing what it says, switched at run time;
and in front of the real Redis and Postgres."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import asyncpg  # type: ignore[import-untyped]
import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tests.servers.fault_proxy import FaultProxy, Mode

pytestmark = pytest.mark.timeout(60)


class Echo:
    """An upstream that echoes every line and counts the connections it got."""

    def __init__(self) -> None:
        self.connections = 0
        self.server: asyncio.Server | None = None
        self.port = 0

    async def on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while line := await reader.readline():
                writer.write(line)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()


@pytest.fixture
async def echo() -> AsyncIterator[Echo]:
    upstream = Echo()
    upstream.server = await asyncio.start_server(upstream.on_client, "127.0.0.1", 0)
    upstream.port = upstream.server.sockets[0].getsockname()[1]
    yield upstream
    upstream.server.close()


@pytest.fixture
def proxy(echo: Echo, fault_proxy_factory: Callable[..., FaultProxy]) -> FaultProxy:
    return fault_proxy_factory("127.0.0.1", echo.port)


async def roundtrip(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, msg: bytes
) -> bytes:
    writer.write(msg + b"\n")
    await writer.drain()
    return await asyncio.wait_for(reader.readline(), 10)


async def test_pass_forwards_both_ways_and_counts(proxy: FaultProxy, echo: Echo) -> None:
    reader, writer = await asyncio.open_connection(*proxy.address)
    assert await roundtrip(reader, writer, b"hello") == b"hello\n"
    assert proxy.accepted == 1 and echo.connections == 1
    assert proxy.bytes_up == 6 and proxy.bytes_down == 6
    writer.close()


async def test_refuse_refuses_new_connections_keeps_open_ones(
    proxy: FaultProxy, echo: Echo
) -> None:
    reader, writer = await asyncio.open_connection(*proxy.address)
    await proxy.await_accepted(1)  # connected means queued by the kernel, not yet accepted
    proxy.refuse()
    assert proxy.mode == Mode.REFUSE
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection(*proxy.address)
    assert await roundtrip(reader, writer, b"still") == b"still\n"  # open ones keep flowing
    proxy.pass_through()  # listening again, same port
    reader2, writer2 = await asyncio.open_connection(*proxy.address)
    assert await roundtrip(reader2, writer2, b"back") == b"back\n"
    writer.close()
    writer2.close()


async def test_hang_accepts_and_forwards_nothing_until_released(
    proxy: FaultProxy, echo: Echo
) -> None:
    reader, writer = await asyncio.open_connection(*proxy.address)
    assert await roundtrip(reader, writer, b"one") == b"one\n"
    proxy.hang()
    # An open connection: what it sends is held.
    writer.write(b"held\n")
    await writer.drain()
    # A new connection: accepted, but the upstream is not even dialled.
    reader2, writer2 = await asyncio.open_connection(*proxy.address)
    await proxy.await_accepted(2)
    writer2.write(b"new\n")
    await writer2.drain()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.readline(), 0.3)
    assert echo.connections == 1 and proxy.bytes_up == 4  # nothing went through
    proxy.pass_through()  # like SIGCONT: everything held is delivered, in order
    assert await asyncio.wait_for(reader.readline(), 10) == b"held\n"
    assert await asyncio.wait_for(reader2.readline(), 10) == b"new\n"
    assert echo.connections == 2
    writer.close()
    writer2.close()


async def test_cut_resets_open_connections_in_any_mode(proxy: FaultProxy) -> None:
    reader, writer = await asyncio.open_connection(*proxy.address)
    assert await roundtrip(reader, writer, b"x") == b"x\n"
    proxy.hang()
    reader2, _writer2 = await asyncio.open_connection(*proxy.address)
    await proxy.await_accepted(2)
    assert proxy.cut() == 2
    for r in (reader, reader2):
        with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
            data = await asyncio.wait_for(r.readexactly(1), 10)
            raise AssertionError(f"read {data!r} from a cut connection")
    proxy.pass_through()
    reader3, writer3 = await asyncio.open_connection(*proxy.address)
    assert await roundtrip(reader3, writer3, b"fresh") == b"fresh\n"
    writer3.close()


async def test_down_refuses_and_cuts(proxy: FaultProxy) -> None:
    reader, writer = await asyncio.open_connection(*proxy.address)
    assert await roundtrip(reader, writer, b"x") == b"x\n"
    assert proxy.down() == 1
    with contextlib.suppress(ConnectionResetError):  # reset or EOF: either way, gone
        assert await asyncio.wait_for(reader.read(1), 10) == b""
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection(*proxy.address)


async def test_in_front_of_real_redis(redis_proxy: FaultProxy, redis_url: str) -> None:
    client = Redis.from_url(
        redis_proxy.url_for(redis_url), socket_timeout=0.3, socket_connect_timeout=0.3
    )
    try:
        assert await client.ping()
        redis_proxy.hang()
        with pytest.raises(RedisTimeoutError):
            await client.ping()
        redis_proxy.down()
        with pytest.raises(RedisConnectionError):
            await client.ping()
        redis_proxy.pass_through()
        assert await client.ping()
    finally:
        await client.aclose()


async def test_in_front_of_real_postgres(postgres_proxy: FaultProxy, database_url: str) -> None:
    dsn = postgres_proxy.url_for(database_url).replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        assert await conn.fetchval("SELECT 1") == 1
        postgres_proxy.hang()
        with pytest.raises(TimeoutError):
            await conn.fetchval("SELECT 2", timeout=0.3)
    finally:
        conn.terminate()
    postgres_proxy.refuse()
    with pytest.raises(OSError):
        await asyncpg.connect(dsn, timeout=5)
    postgres_proxy.pass_through()
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        assert await conn.fetchval("SELECT 3") == 3
    finally:
        await conn.close()
