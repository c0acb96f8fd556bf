"""The pictures the bot sends, shipped as package data (drawn by scripts/draw_images.py).

A package rather than a loose folder so that the installed bot finds them wherever it runs,
without a source checkout next to it.
"""

from pathlib import Path

#: images/cosmic/*.jpg and images/signs/<sign>.jpg; asset keys are paths relative to it.
IMAGES_DIR = Path(__file__).resolve().parent / "images"

__all__ = ["IMAGES_DIR"]
