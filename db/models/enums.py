"""Column types for the domain enums: VARCHAR + a named CHECK constraint.

Checked strings rather than native Postgres ENUM types: Postgres still rejects an unknown sign,
while adding a language later is a one-line constraint change instead of ALTER TYPE.
"""

from __future__ import annotations

from sqlalchemy import Enum

from db.types import Lang, Sign


def sign_type() -> Enum:
    return Enum(
        Sign,
        name="zodiac_sign",
        native_enum=False,
        create_constraint=True,
        length=16,
        values_callable=lambda enum: [member.value for member in enum],
        validate_strings=True,
    )


def lang_type() -> Enum:
    return Enum(
        Lang,
        name="lang",
        native_enum=False,
        create_constraint=True,
        length=8,
        values_callable=lambda enum: [member.value for member in enum],
        validate_strings=True,
    )
