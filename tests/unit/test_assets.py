"""The committed pictures: present, decodable, small enough for Telegram, and reproducible.

The bot uploads each file once and reuses Telegram's file_id, keyed by the file's content hash, so
redrawing must give the same bytes; these tests check properties, not the committed bytes (a
different Pillow or font may legitimately draw slightly different pixels).
"""

from __future__ import annotations

import importlib.util
import io
import sys
from pathlib import Path
from types import ModuleType

import pytest
from PIL import Image

from db.types import Sign

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "assets" / "images"
MAX_SIDE = 1280
MAX_BYTES = 200 * 1024


@pytest.fixture(scope="module")
def drawing() -> ModuleType:
    """scripts/ is not a package: load the script by path."""
    path = ROOT / "scripts" / "draw_images.py"
    spec = importlib.util.spec_from_file_location("draw_images_under_test", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def check_jpeg(path: Path) -> None:
    data = path.read_bytes()
    assert len(data) <= MAX_BYTES, f"{path.name}: {len(data)} bytes"
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "JPEG", path.name
        assert max(image.size) <= MAX_SIDE, (path.name, image.size)
        assert min(image.size) >= 320, (path.name, image.size)
        image.load()  # decodes the whole file, not just the header
        assert "exif" not in image.info


def test_at_least_thirty_cosmic_images() -> None:
    files = sorted((IMAGES / "cosmic").glob("*.jpg"))
    assert len(files) >= 30
    names = [f.name for f in files]
    assert names[:30] == [f"cosmic-{i:02d}.jpg" for i in range(1, 31)]
    for path in files:
        check_jpeg(path)


def test_exactly_the_twelve_signs() -> None:
    files = sorted((IMAGES / "signs").iterdir())
    assert sorted(f.name for f in files) == sorted(f"{sign.value}.jpg" for sign in Sign)
    for path in files:
        check_jpeg(path)


def test_cosmic_images_are_all_different() -> None:
    digests = {p.read_bytes() for p in (IMAGES / "cosmic").glob("*.jpg")}
    assert len(digests) == len(list((IMAGES / "cosmic").glob("*.jpg")))


def test_readme_explains_how_to_redraw() -> None:
    text = (ROOT / "assets" / "README.md").read_text(encoding="utf-8")
    assert "scripts/draw_images.py" in text


def test_drawing_is_deterministic_in_process(drawing: ModuleType) -> None:
    first = drawing.cosmic_bytes(4)
    second = drawing.cosmic_bytes(4)
    assert first == second
    assert len(first) <= MAX_BYTES
    assert first != drawing.cosmic_bytes(8)  # same style, another seed: another picture


def test_sign_card_is_deterministic_and_has_a_fallback_symbol(
    drawing: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a font that has ♈…♓ the card draws a constellation instead, still reproducibly."""
    monkeypatch.setattr(drawing, "glyph_font", lambda size: None)
    first = drawing.sign_bytes(Sign.SCORPIO)
    assert first == drawing.sign_bytes(Sign.SCORPIO)
    with Image.open(io.BytesIO(first)) as image:
        assert max(image.size) <= MAX_SIDE
    assert len(first) <= MAX_BYTES
