"""``--max-count``, checked in one place with one message, for every operation that takes it.

online-migrate and heal-allocations both take ``--max-count`` (an action's
``max-count`` too) and refuse what nova-manage refuses with its exit code 127.
The CLI hands over the text as typed, the charm and library callers an int.
"""

from __future__ import annotations

from novadb.errors import BadArgument

MAX_COUNT_REFUSED = "Must supply a positive integer for --max-count."


def max_count(value: int | str | None) -> int | None:
    """``value`` as a positive int; None (no limit) stays None; anything else is refused."""
    if value is None:
        return None
    try:
        count = int(value)
    except ValueError:
        raise BadArgument(MAX_COUNT_REFUSED) from None
    if count < 1:
        raise BadArgument(MAX_COUNT_REFUSED)
    return count
