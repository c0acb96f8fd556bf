from __future__ import annotations

from sqlalchemy import BigInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from db.base import Base, TimestampMixin


class ImageAsset(TimestampMixin, Base):
    """A Telegram file_id for one picture, valid for one bot only.

    content_sha256 is the hash of the file that was uploaded: when the file on disk changes, the
    stored file_id shows a different picture and counts as absent.
    """

    __tablename__ = "image_assets"

    bot_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    asset_key: Mapped[str] = mapped_column(String(200), primary_key=True)
    file_id: Mapped[str] = mapped_column(String(255))
    file_unique_id: Mapped[str | None] = mapped_column(String(64))
    content_sha256: Mapped[str] = mapped_column(String(64))
