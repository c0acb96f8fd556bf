"""All models, imported here so Alembic's autogenerate sees the whole metadata."""

from db.base import Base
from db.models.horoscope import AppliedBatch, GenerationClaim, Horoscope, HoroscopeView
from db.models.image_asset import ImageAsset
from db.models.outbox import CacheInvalidation
from db.models.user import User

__all__ = [
    "AppliedBatch",
    "Base",
    "CacheInvalidation",
    "GenerationClaim",
    "Horoscope",
    "HoroscopeView",
    "ImageAsset",
    "User",
]
