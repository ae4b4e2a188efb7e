"""`Choice`: the base of every option Enum (a `str` Enum whose members carry docstrings).

Below every layer (imports nothing from isograd), so each front door can share one `parse`
whose error lists the allowed values from the Enum itself.
"""

from __future__ import annotations

from enum import Enum
from typing import TypeVar

C = TypeVar("C", bound="Choice")


class Choice(str, Enum):
    """A keyword option; `parse` accepts a member or its string value."""

    @classmethod
    def noun(cls) -> str:
        """What one value is called in error messages (the class name unless overridden)."""
        return cls.__name__.lower()

    @classmethod
    def parse(cls: type[C], value: str | C) -> C:
        """`value` as a member, or a ValueError listing the allowed values."""
        try:
            return cls(value)
        except ValueError:
            allowed = ", ".join(repr(m.value) for m in cls)
            raise ValueError(f"unknown {cls.noun()} {value!r}; allowed: {allowed}") from None
