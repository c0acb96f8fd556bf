"""The installed package runs outside a source checkout, and carries no development tooling.

This is what the Dockerfile relies on (issue 16): the wheel holds bot, cache, db, jobs and, as
package data, migrations/ and assets/; it does not hold devtools/ (embedded servers, the Bot
API double, the playground). The wheel is built from this checkout, installed into a folder of
its own and run from another folder, with the checkout's dependencies but not its sources.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from db.testing import temporary_database

ROOT = Path(__file__).resolve().parents[3]
#: What the Dockerfile copies into its build stage.
PACKAGED = ("pyproject.toml", "README.md", "bot", "cache", "db", "jobs", "migrations", "assets")

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Built from a copy of what git tracks: building in the checkout would leave a build/
    # folder whose stale files a later build could pick up.
    src = tmp_path_factory.mktemp("src")
    tracked = (
        subprocess.run(
            ["git", "ls-files", "-z", *PACKAGED], cwd=ROOT, check=True, capture_output=True
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, tracked):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, src / name)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(out), str(src)],
        check=True, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    (built,) = out.glob("horoscope_bot-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    site = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site),
         str(wheel)],
        check=True, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    yield site


def _python(site: Path, cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The venv's interpreter with the installed package first on the path, run elsewhere."""
    full = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    full.update(PYTHONPATH=str(site), **env)
    return subprocess.run(
        [sys.executable, "-P", *args], cwd=cwd, env=full, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip


def test_wheel_holds_the_bot_and_its_data_and_no_devtools(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/", 1)[0] for name in names if "/" in name}
    assert {"bot", "cache", "db", "jobs", "migrations", "assets"} <= tops
    assert not {"devtools", "tests", "benchmarks", "scripts"} & tops
    assert "migrations/script.py.mako" in names
    assert any(n.startswith("migrations/versions/") and n.endswith(".py") for n in names)
    assert "assets/images/signs/leo.jpg" in names
    assert sum(n.startswith("assets/images/cosmic/") for n in names) >= 32


def test_installed_package_is_what_runs(installed: Path, tmp_path: Path) -> None:
    code = "import bot, assets, migrations; print(bot.__file__, assets.IMAGES_DIR)"
    out = _python(installed, tmp_path, "-c", code)
    assert out.returncode == 0, out.stderr
    assert str(installed) in out.stdout and str(ROOT) not in out.stdout
    out = _python(installed, tmp_path, "-c", "import devtools")
    assert out.returncode != 0 and "No module named 'devtools'" in out.stderr


def test_installed_playground_says_it_is_not_there(installed: Path, tmp_path: Path) -> None:
    out = _python(installed, tmp_path, "-m", "bot", "playground")
    assert out.returncode == 2
    assert "not available in this installation" in out.stderr


def test_installed_run_without_store_urls_stops_with_one_line(
    installed: Path, tmp_path: Path
) -> None:
    out = _python(installed, tmp_path, "-m", "bot", "migrate")
    assert out.returncode == 2, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "DATABASE_URL and REDIS_URL not set" in lines[0]


async def test_installed_package_migrates_from_its_package_data(
    installed: Path, tmp_path: Path, postgres_server_url: str, redis_url: str
) -> None:
    """`python -m bot migrate` from the installed package: Alembic finds its scripts."""
    async with temporary_database(postgres_server_url, "horo_pkg") as url:
        out = _python(
            installed, tmp_path, "-m", "bot", "migrate", DATABASE_URL=url, REDIS_URL=redis_url
        )
        assert out.returncode == 0, out.stderr
        assert "migrations_done" in out.stdout + out.stderr
