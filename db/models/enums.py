"""Column types for the domain enums: VARCHAR + a named CHECK constraint.

Checked strings rather than native Postgres ENUM types: Postgres still rejects an unknown sign,
while adding a language later is a one-line constraint change instead of ALTER TYPE.
"""

from __future__ import annotations

import enum

from sqlalchemy import Enum

from db.types import Lang, Sign


def _value_enum(enum_cls: type[enum.Enum], name: str, length: int) -> Enum:
    """A VARCHAR(length) + CHECK column storing the members' values (not their names)."""
    return Enum(
        enum_cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=length,
        values_callable=lambda members: [member.value for member in members],
        validate_strings=True,
    )


def sign_type() -> Enum:
    return _value_enum(Sign, "zodiac_sign", 16)


def lang_type() -> Enum:
    return _value_enum(Lang, "lang", 8)
