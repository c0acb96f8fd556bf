from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, Identity, String, func
from sqlalchemy.orm import Mapped, mapped_column

from db.base import Base


class CacheInvalidation(Base):
    """Cache keys whose rows changed, written in the transaction that changed them (an outbox).

    After the commit the writer deletes the keys in Redis and then this row; when Redis did not
    answer, the row stays and whoever sees Redis answer again (any process, the replay job)
    deletes the keys then. So a change made while Redis was down, or by a process that died
    between its commit and its DEL, cannot leave an old entry in Redis until its TTL.
    """

    __tablename__ = "cache_invalidations"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    cache_key: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
