"""Parse ``--before`` the way nova-manage does, with the exit code the caller documents."""

from __future__ import annotations

from datetime import datetime, timezone

from dateutil import parser as dateutil_parser

from novadb.errors import BadInput


def parse_before(text: str, *, exit_code: int) -> datetime:
    """A naive UTC datetime from free text (``2024-01-31``, ``Jan 31 2024 10:00``).

    nova-manage parses fuzzily with dateutil; Nova stores naive UTC
    timestamps, so an aware value is converted to UTC and made naive.
    """
    try:
        value = dateutil_parser.parse(text, fuzzy=True)
    except (ValueError, OverflowError) as exc:
        raise BadInput(
            f"Invalid value for --before: {exc}; give a date such as 2024-01-31 or "
            "'2024-01-31 12:00'",
            exit_code=exit_code,
        ) from exc
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return value
