"""Draw the bot's pictures: cosmic backgrounds and the twelve zodiac sign cards.

Run ``.venv/bin/python scripts/draw_images.py`` to (re)draw everything under ``assets/images``.

The images are committed, not drawn or downloaded at run time: the bot uploads each file once
and then reuses Telegram's file_id, which is keyed by the file's content hash, so the bytes must
not change between runs. Hence everything here is deterministic: every random choice comes from a
``random.Random`` seeded with a sha256 of the image's name, noise is made from that generator's
bytes (never from Pillow's ``effect_noise``, which uses the C library's unseeded ``rand()``), and
the JPEGs carry no timestamp or EXIF. Only Pillow is needed (a dev dependency).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import io
import math
import random
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageFont, ImageOps

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from db.types import Sign  # noqa: E402  (after the path tweak, so the script runs from anywhere)

OUT_DIR = ROOT / "assets" / "images"
COSMIC_COUNT = 32
SIZE = (960, 640)
MAX_BYTES = 200 * 1024
JPEG_QUALITY = 82

FONT_DIRS = (
    Path("/usr/share/fonts/truetype/dejavu"),
    Path("/usr/share/fonts/dejavu"),
    Path("/usr/local/share/fonts"),
)

RGB = tuple[int, int, int]

# (deep background, mid tone, highlight, accent) — the nebula, galaxy and gradient styles each
# use these stops differently, so the same palette looks different in two styles.
PALETTES: tuple[tuple[RGB, RGB, RGB, RGB], ...] = (
    ((6, 8, 28), (62, 36, 128), (236, 120, 200), (90, 200, 255)),  # violet and pink
    ((4, 14, 30), (18, 92, 120), (140, 240, 220), (255, 200, 120)),  # teal
    ((20, 6, 18), (140, 30, 60), (255, 170, 90), (255, 230, 160)),  # ember
    ((5, 6, 20), (40, 60, 160), (170, 200, 255), (255, 140, 210)),  # sapphire
    ((10, 4, 24), (100, 30, 140), (255, 120, 120), (120, 220, 255)),  # magenta dusk
    ((3, 16, 16), (20, 110, 80), (180, 255, 170), (120, 160, 255)),  # aurora green
    ((18, 10, 6), (150, 80, 30), (255, 214, 140), (120, 170, 255)),  # golden dust
    ((4, 4, 12), (70, 70, 110), (220, 220, 255), (255, 190, 110)),  # silver
    ((12, 4, 30), (60, 20, 170), (130, 220, 255), (255, 110, 180)),  # electric
    ((20, 4, 10), (120, 20, 90), (250, 150, 230), (255, 220, 120)),  # rose
    ((2, 10, 24), (10, 70, 150), (90, 230, 255), (200, 255, 200)),  # ocean
    ((14, 10, 2), (110, 100, 20), (250, 240, 150), (255, 140, 90)),  # sulphur
)

# Sign cards take their palette from the element: warm fire, green-gold earth, airy violet-blue,
# deep-sea water.
ELEMENT_PALETTES: dict[str, tuple[RGB, RGB, RGB, RGB]] = {
    "fire": ((22, 6, 8), (150, 40, 30), (255, 170, 80), (255, 230, 150)),
    "earth": ((6, 14, 8), (50, 100, 50), (220, 210, 130), (255, 200, 120)),
    "air": ((8, 8, 28), (80, 70, 170), (190, 200, 255), (255, 170, 230)),
    "water": ((2, 10, 26), (16, 80, 140), (110, 220, 240), (170, 150, 255)),
}
SIGN_ELEMENT = {
    Sign.ARIES: "fire", Sign.LEO: "fire", Sign.SAGITTARIUS: "fire",
    Sign.TAURUS: "earth", Sign.VIRGO: "earth", Sign.CAPRICORN: "earth",
    Sign.GEMINI: "air", Sign.LIBRA: "air", Sign.AQUARIUS: "air",
    Sign.CANCER: "water", Sign.SCORPIO: "water", Sign.PISCES: "water",
}  # fmt: skip
SIGN_GLYPH = {sign: chr(0x2648 + i) for i, sign in enumerate(Sign)}  # ♈ … ♓, in zodiac order

# Fallback when no font has the zodiac glyphs: a stylised constellation (points in a unit box,
# then edges between point indexes).
CONSTELLATIONS: dict[Sign, tuple[tuple[tuple[float, float], ...], tuple[tuple[int, int], ...]]] = {
    Sign.ARIES: (((0.1, 0.65), (0.45, 0.45), (0.72, 0.4), (0.9, 0.5)), ((0, 1), (1, 2), (2, 3))),
    Sign.TAURUS: (
        ((0.05, 0.15), (0.35, 0.45), (0.5, 0.55), (0.62, 0.45), (0.95, 0.2), (0.55, 0.85)),
        ((0, 1), (1, 2), (2, 3), (3, 4), (2, 5)),
    ),
    Sign.GEMINI: (
        ((0.25, 0.1), (0.2, 0.5), (0.15, 0.9), (0.7, 0.15), (0.75, 0.5), (0.8, 0.9)),
        ((0, 1), (1, 2), (3, 4), (4, 5), (0, 3), (1, 4)),
    ),
    Sign.CANCER: (
        ((0.5, 0.45), (0.3, 0.15), (0.2, 0.85), (0.85, 0.8), (0.5, 0.6)),
        ((0, 1), (0, 4), (4, 2), (4, 3)),
    ),
    Sign.LEO: (
        ((0.15, 0.35), (0.3, 0.15), (0.5, 0.2), (0.45, 0.45), (0.7, 0.6), (0.95, 0.7), (0.6, 0.85)),
        ((0, 1), (1, 2), (2, 3), (3, 0), (3, 4), (4, 5), (5, 6), (6, 3)),
    ),
    Sign.VIRGO: (
        ((0.05, 0.3), (0.3, 0.35), (0.5, 0.3), (0.7, 0.45), (0.95, 0.4), (0.55, 0.7), (0.8, 0.9)),
        ((0, 1), (1, 2), (2, 3), (3, 4), (2, 5), (5, 6)),
    ),
    Sign.LIBRA: (
        ((0.5, 0.1), (0.15, 0.45), (0.85, 0.45), (0.25, 0.85), (0.75, 0.85)),
        ((0, 1), (0, 2), (1, 2), (1, 3), (2, 4)),
    ),
    Sign.SCORPIO: (
        (
            (0.05, 0.2),
            (0.2, 0.3),
            (0.35, 0.45),
            (0.45, 0.65),
            (0.6, 0.8),
            (0.8, 0.85),
            (0.92, 0.65),
        ),
        ((0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 6)),
    ),
    Sign.SAGITTARIUS: (
        ((0.2, 0.8), (0.4, 0.6), (0.6, 0.4), (0.85, 0.15), (0.65, 0.15), (0.85, 0.35), (0.35, 0.3)),
        ((0, 1), (1, 2), (2, 3), (3, 4), (3, 5), (6, 1)),
    ),
    Sign.CAPRICORN: (
        ((0.05, 0.25), (0.3, 0.7), (0.55, 0.85), (0.95, 0.3), (0.6, 0.4)),
        ((0, 1), (1, 2), (2, 3), (3, 4), (4, 0)),
    ),
    Sign.AQUARIUS: (
        ((0.05, 0.4), (0.25, 0.25), (0.45, 0.4), (0.65, 0.25), (0.85, 0.4), (0.5, 0.8)),
        ((0, 1), (1, 2), (2, 3), (3, 4), (2, 5)),
    ),
    Sign.PISCES: (
        ((0.1, 0.15), (0.2, 0.5), (0.45, 0.85), (0.7, 0.6), (0.95, 0.5), (0.85, 0.3)),
        ((0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 3)),
    ),
}


# --- primitives ---------------------------------------------------------------------------------


def make_rng(*parts: str) -> random.Random:
    """A generator seeded from the image's name: stable across processes and machines."""
    digest = hashlib.sha256("|".join(("draw-images-v1", *parts)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def noise(rng: random.Random, size: tuple[int, int]) -> Image.Image:
    """Uniform grey noise from the seeded generator."""
    return Image.frombytes("L", size, rng.randbytes(size[0] * size[1]))


def clouds(
    rng: random.Random,
    size: tuple[int, int],
    *,
    base: int = 3,
    octaves: int = 5,
    rough: float = 0.5,
) -> Image.Image:
    """Fractal value noise: coarse-to-fine noise grids upscaled smoothly and averaged."""
    width, height = size
    acc: Image.Image | None = None
    total = 0.0
    for octave in range(octaves):
        cells = base * 2**octave
        grid = (max(2, cells), max(2, round(cells * height / width)))
        layer = noise(rng, grid).resize(size, Image.Resampling.BICUBIC)
        amp = rough**octave
        acc = layer if acc is None else Image.blend(acc, layer, amp / (total + amp))
        total += amp
    assert acc is not None
    return ImageOps.autocontrast(acc, cutoff=1)


def curve(image: Image.Image, low: int, high: int, gamma: float = 1.0) -> Image.Image:
    """Map ``low..high`` to 0..255 with a gamma: turns soft noise into wisps and voids."""
    span = max(1, high - low)
    lut = [round(255 * min(1.0, max(0.0, (v - low) / span)) ** gamma) for v in range(256)]
    return image.point(lut)


def gradient(size: tuple[int, int], angle: float) -> Image.Image:
    """A linear 0..255 gradient across ``size`` at ``angle`` degrees."""
    side = int(math.hypot(*size)) + 2
    grad = Image.linear_gradient("L").resize((side, side), Image.Resampling.BICUBIC)
    grad = grad.rotate(angle, resample=Image.Resampling.BICUBIC)
    left, top = (side - size[0]) // 2, (side - size[1]) // 2
    return grad.crop((left, top, left + size[0], top + size[1]))


def vignette(image: Image.Image, strength: float) -> Image.Image:
    """Darken the corners so text and glyphs in the middle stand out."""
    radial = Image.radial_gradient("L").resize(image.size, Image.Resampling.BICUBIC)
    mask = curve(radial, 90, 255, 1.3).point(lambda v: round(v * strength))
    return Image.composite(Image.new("RGB", image.size, (0, 0, 0)), image, mask)


def stars(
    rng: random.Random,
    size: tuple[int, int],
    count: int,
    bright: int,
    *,
    density: Image.Image | None = None,
) -> Image.Image:
    """A star field: many faint points, a few bright stars with a glow and thin spikes.

    ``density`` (an "L" image) makes stars cluster where it is bright (a Milky Way band).
    """
    width, height = size
    points = Image.new("RGB", size)
    draw = ImageDraw.Draw(points)
    placed = 0
    while placed < count:
        x, y = rng.randrange(width), rng.randrange(height)
        if density is not None and density.getpixel((x, y)) < rng.randrange(256):  # type: ignore[operator]
            continue
        level = 60 + round(195 * rng.random() ** 3)
        tint = rng.choice(((0, 0, 0), (-30, -10, 20), (20, 5, -25), (-15, -5, 0)))
        draw.point((x, y), fill=tuple(max(0, min(255, level + t)) for t in tint))
        placed += 1

    glow = Image.new("RGB", size)
    glow_draw = ImageDraw.Draw(glow)
    cores = Image.new("RGB", size)
    core_draw = ImageDraw.Draw(cores)
    for _ in range(bright):
        sx, sy = rng.uniform(0, width), rng.uniform(0, height)
        radius = rng.uniform(1.0, 2.4)
        colour = rng.choice(((255, 255, 255), (200, 220, 255), (255, 235, 200), (255, 210, 230)))
        halo = tuple(round(c * 0.55) for c in colour)
        glow_draw.ellipse(
            (sx - 3 * radius, sy - 3 * radius, sx + 3 * radius, sy + 3 * radius), halo
        )
        core_draw.ellipse((sx - radius, sy - radius, sx + radius, sy + radius), colour)
        if radius > 1.9:
            spike = radius * rng.uniform(7, 12)
            dim = tuple(round(c * 0.7) for c in colour)
            core_draw.line((sx - spike, sy, sx + spike, sy), fill=dim, width=1)
            core_draw.line((sx, sy - spike, sx, sy + spike), fill=dim, width=1)
    glow = glow.filter(ImageFilter.GaussianBlur(4))
    return ImageChops.add(ImageChops.add(points, glow), cores.filter(ImageFilter.GaussianBlur(0.6)))


def mix(a: RGB, b: RGB, share: float) -> RGB:
    """``a`` moved ``share`` of the way towards ``b``."""
    return (
        round(a[0] + (b[0] - a[0]) * share),
        round(a[1] + (b[1] - a[1]) * share),
        round(a[2] + (b[2] - a[2]) * share),
    )


def colorize(gray: Image.Image, stops: Sequence[RGB]) -> Image.Image:
    black, mid, white = stops
    return ImageOps.colorize(gray, black=black, white=white, mid=mid)


def half(size: tuple[int, int]) -> tuple[int, int]:
    return size[0] // 2, size[1] // 2


def up(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Soft fields are computed at half size (4x fewer pixels) and scaled up; nobody can tell."""
    return image.resize(size, Image.Resampling.BICUBIC)


# --- styles -------------------------------------------------------------------------------------


def base_gradient(rng: random.Random, size: tuple[int, int], palette: Sequence[RGB]) -> Image.Image:
    """A dark two-tone sky: the deep colour fading into a darkened mid tone."""
    deep, mid = palette[0], palette[1]
    dark_mid = mix((0, 0, 0), mid, 0.35)
    grad = curve(gradient(size, rng.uniform(0, 360)), 0, 255, rng.uniform(1.2, 2.2))
    return colorize(grad, (deep, mix(deep, dark_mid, 0.5), dark_mid))


def draw_nebula(rng: random.Random, size: tuple[int, int], palette: Sequence[RGB]) -> Image.Image:
    small = half(size)
    sky = base_gradient(rng, small, palette)
    shape = clouds(rng, small, base=2, octaves=6, rough=0.6)
    wisps = clouds(rng, small, base=4, octaves=5, rough=0.55)
    density = curve(ImageChops.multiply(shape, ImageOps.invert(curve(wisps, 0, 200))), 10, 150)
    glow = colorize(curve(shape, 40, 255), (palette[0], palette[1], palette[2]))
    sky = Image.composite(glow, sky, density.filter(ImageFilter.GaussianBlur(2)))
    accent = clouds(rng, small, base=3, octaves=5)
    accent_mask = curve(accent, rng.randint(150, 185), 255, 1.4)
    tint = Image.new("RGB", small, palette[3])
    sky = Image.composite(ImageChops.screen(sky, tint), sky, accent_mask.point(lambda v: v // 2))
    image = up(sky, size)
    return ImageChops.screen(image, stars(rng, size, 900, 26))


def draw_galaxy(rng: random.Random, size: tuple[int, int], palette: Sequence[RGB]) -> Image.Image:
    sky = up(base_gradient(rng, half(size), palette), size)
    side = 620
    disc = Image.new("L", (side, side))
    draw = ImageDraw.Draw(disc)
    arms = rng.choice((2, 2, 3, 4))
    twist = rng.uniform(0.22, 0.34)
    centre = side / 2
    for arm in range(arms):
        offset = arm * 2 * math.pi / arms
        for _ in range(5200 // arms):
            t = rng.random() ** 0.8 * 3.4 * math.pi
            radius = 16 * math.exp(twist * t)
            if radius > centre * 0.95:
                continue
            angle = t + offset + rng.gauss(0, 0.22)
            spread = rng.gauss(0, 5 + radius * 0.06)
            x = centre + radius * math.cos(angle) + spread
            y = centre + radius * math.sin(angle) + rng.gauss(0, 4)
            level = round(255 * (1 - radius / centre) ** 0.7 * rng.uniform(0.4, 1.0))
            draw.point((x, y), fill=level)
    haze = disc.filter(ImageFilter.GaussianBlur(9)).point(lambda v: min(255, v * 7))
    arms_img = ImageChops.add(haze, disc.filter(ImageFilter.GaussianBlur(1.2)))
    core = ImageOps.invert(Image.radial_gradient("L")).resize((side, side))
    core = curve(core, 150, 255, 2.2)
    galaxy = ImageChops.lighter(arms_img, core)
    tilt = rng.uniform(0.35, 0.7)
    scale = rng.uniform(1.3, 1.7)
    galaxy = galaxy.resize(
        (round(side * scale), round(side * scale * tilt)), Image.Resampling.BICUBIC
    )
    galaxy = galaxy.rotate(rng.uniform(-40, 40), expand=True, resample=Image.Resampling.BICUBIC)
    colour = colorize(galaxy, ((0, 0, 0), palette[1], palette[2]))
    core_tint = Image.new("RGB", galaxy.size, palette[3])
    colour = Image.composite(
        ImageChops.screen(colour, core_tint),
        colour,
        curve(galaxy, 200, 255).point(lambda v: v // 2),
    )
    layer = Image.new("RGB", size)
    x = rng.randint(size[0] // 2 - colour.width // 2 - 160, size[0] // 2 - colour.width // 2 + 160)
    y = (size[1] - colour.height) // 2 + rng.randint(-60, 60)
    layer.paste(colour, (x, y))
    image = ImageChops.screen(sky, layer)
    return ImageChops.screen(image, stars(rng, size, 1100, 18))


def draw_milky_way(
    rng: random.Random, size: tuple[int, int], palette: Sequence[RGB]
) -> Image.Image:
    small = half(size)
    sky = base_gradient(rng, small, palette)
    band = gradient(small, rng.uniform(-35, 35) + rng.choice((0, 90)))
    band = band.point(lambda v: max(0, 255 - abs(v - 128) * 4))  # a soft stripe across the sky
    dust = clouds(rng, small, base=3, octaves=6, rough=0.6)
    glow_mask = ImageChops.multiply(band, curve(dust, 30, 230))
    lanes = curve(clouds(rng, small, base=6, octaves=4), 170, 255)
    glow_mask = ImageChops.subtract(glow_mask, lanes.point(lambda v: v // 2))
    glow = colorize(curve(dust, 0, 255), (palette[1], palette[2], (255, 245, 230)))
    sky = Image.composite(glow, sky, glow_mask.point(lambda v: round(v * 0.85)))
    image = up(sky, size)
    density = up(glow_mask, size)
    dense = stars(rng, size, 3200, 6, density=density)
    return ImageChops.screen(ImageChops.screen(image, dense), stars(rng, size, 500, 20))


def draw_aurora(rng: random.Random, size: tuple[int, int], palette: Sequence[RGB]) -> Image.Image:
    small = half(size)
    grad = gradient(small, rng.uniform(0, 360))
    sky = colorize(curve(grad, 0, 255, 1.1), (palette[0], palette[1], palette[3]))
    sky = Image.blend(Image.new("RGB", small, palette[0]), sky, 0.75)
    # Noise stretched one way reads as curtains of light; drawn on a square canvas large enough
    # that rotating it leaves no empty corners, then cropped.
    side = int(math.hypot(*small)) + 2
    veil = clouds(rng, (side, side // 5), base=5, octaves=4)
    veil = veil.resize((side, side), Image.Resampling.BICUBIC)
    veil = veil.rotate(90 + rng.uniform(-25, 25), resample=Image.Resampling.BICUBIC)
    left, top = (side - small[0]) // 2, (side - small[1]) // 2
    veil = veil.crop((left, top, left + small[0], top + small[1]))
    curtain = ImageChops.multiply(curve(veil, 110, 255, 1.5), curve(grad, 40, 255, 0.8))
    light = Image.new("RGB", small, palette[2])
    sky = Image.composite(ImageChops.screen(sky, light), sky, curtain)
    image = up(sky, size)
    return vignette(ImageChops.screen(image, stars(rng, size, 700, 14)), 0.5)


STYLES: tuple[Callable[[random.Random, tuple[int, int], Sequence[RGB]], Image.Image], ...] = (
    draw_nebula,
    draw_galaxy,
    draw_milky_way,
    draw_aurora,
)


def draw_cosmic(index: int) -> Image.Image:
    """Background number ``index`` (1-based): the style cycles, the palette is drawn by seed."""
    rng = make_rng("cosmic", str(index))
    style = STYLES[(index - 1) % len(STYLES)]
    palette = PALETTES[(index * 5 + rng.randrange(3)) % len(PALETTES)]
    return style(rng, SIZE, palette)


# --- sign cards ---------------------------------------------------------------------------------


def find_font(*names: str) -> Path | None:
    for folder in FONT_DIRS:
        for name in names:
            path = folder / name
            if path.is_file():
                return path
    return None


def load_font(size: int, *names: str) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    path = find_font(*names)
    if path is not None:
        return ImageFont.truetype(str(path), size)
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1 ships a scalable font
    except TypeError:
        return ImageFont.load_default()


def glyph_font(size: int) -> ImageFont.FreeTypeFont | None:
    """A font that really has ♈…♓ (not the .notdef box), or None."""
    for name in (
        "DejaVuSans.ttf",
        "DejaVuSans-Bold.ttf",
        "Symbola.ttf",
        "NotoSansSymbols-Regular.ttf",
    ):
        path = find_font(name)
        if path is None:
            continue
        font = ImageFont.truetype(str(path), size)
        missing = bytes(font.getmask("\uffff"))
        if all(bytes(font.getmask(g)) != missing for g in SIGN_GLYPH.values()):
            return font
    return None


def draw_constellation(
    sign: Sign, size: tuple[int, int], box: tuple[int, int, int, int]
) -> Image.Image:
    """Fallback symbol: the sign's stylised constellation, stars joined by thin lines."""
    points, edges = CONSTELLATIONS[sign]
    left, top, right, bottom = box
    xy = [(left + px * (right - left), top + py * (bottom - top)) for px, py in points]
    layer = Image.new("L", size)
    draw = ImageDraw.Draw(layer)
    for a, b in edges:
        draw.line((xy[a], xy[b]), fill=170, width=4)
    for x, y in xy:
        draw.ellipse((x - 11, y - 11, x + 11, y + 11), fill=255)
    return layer


def draw_sign(sign: Sign) -> Image.Image:
    """A card: element-coloured nebula, a glowing ring, the glyph, the sign's English name."""
    rng = make_rng("sign", sign.value)
    palette = ELEMENT_PALETTES[SIGN_ELEMENT[sign]]
    width = SIZE[0]
    background = draw_nebula(rng, SIZE, palette)
    background = vignette(Image.blend(Image.new("RGB", SIZE), background, 0.75), 0.8)

    cx, cy, radius = width // 2, 268, 188
    art = Image.new("L", SIZE)
    draw = ImageDraw.Draw(art)
    draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), outline=200, width=4)
    inner = radius - 16
    draw.ellipse((cx - inner, cy - inner, cx + inner, cy + inner), outline=90, width=2)
    for i in range(12):  # twelve ticks around the ring, the sign's own one longer
        angle = math.radians(i * 30 - 90)
        length = 34 if i == list(Sign).index(sign) else 14
        outer_r = radius + 6
        draw.line(
            (
                cx + outer_r * math.cos(angle),
                cy + outer_r * math.sin(angle),
                cx + (outer_r + length) * math.cos(angle),
                cy + (outer_r + length) * math.sin(angle),
            ),
            fill=220,
            width=3,
        )

    font = glyph_font(230)
    if font is not None:
        draw.text((cx, cy + 6), SIGN_GLYPH[sign], font=font, fill=255, anchor="mm")
    else:
        art = ImageChops.lighter(
            art, draw_constellation(sign, SIZE, (cx - 120, cy - 110, cx + 120, cy + 110))
        )

    name = sign.value.upper()
    name_font = load_font(64, "DejaVuSans-Bold.ttf", "DejaVuSansCondensed-Bold.ttf")
    spaced = " ".join(name)  # letter-spacing, the poor man's way
    draw = ImageDraw.Draw(art)
    draw.text((cx, 548), spaced, font=name_font, fill=255, anchor="mm")

    gold = palette[3]
    glow = colorize(art.filter(ImageFilter.GaussianBlur(10)), ((0, 0, 0), palette[2], gold))
    crisp = colorize(art, ((0, 0, 0), gold, (255, 255, 255)))
    return ImageChops.screen(ImageChops.screen(background, glow), crisp)


# --- output -------------------------------------------------------------------------------------


def encode_jpeg(image: Image.Image, quality: int = JPEG_QUALITY) -> bytes:
    """JPEG bytes with no EXIF or timestamps, stepping quality down until under MAX_BYTES."""
    image = image.convert("RGB")
    while True:
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=quality, optimize=True, subsampling=2)
        data = buffer.getvalue()
        if len(data) <= MAX_BYTES or quality <= 40:
            return data
        quality -= 6


def cosmic_bytes(index: int) -> bytes:
    return encode_jpeg(draw_cosmic(index))


def sign_bytes(sign: Sign) -> bytes:
    return encode_jpeg(draw_sign(sign))


def write(path: Path, data: bytes) -> bool:
    """Write only if the content differs (keeps mtimes and git status quiet on re-runs)."""
    if path.exists() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="output folder")
    parser.add_argument("--count", type=int, default=COSMIC_COUNT, help="cosmic backgrounds")
    args = parser.parse_args(argv)

    jobs: list[tuple[Path, Callable[[], bytes]]] = [
        (args.out / "cosmic" / f"cosmic-{i:02d}.jpg", functools.partial(cosmic_bytes, i))
        for i in range(1, args.count + 1)
    ]
    jobs += [
        (args.out / "signs" / f"{s.value}.jpg", functools.partial(sign_bytes, s)) for s in Sign
    ]
    for path, render in jobs:
        data = render()
        changed = write(path, data)
        print(
            f"{'wrote' if changed else 'same '} {path.relative_to(args.out)} {len(data) // 1024} KB"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
