"""Progress events: what a long operation reports while it works.

Operations take an optional ``progress`` callback and call it with small
immutable events; the CLI turns them into bars and lines, the charm into
``event.log`` messages.  The library never prints.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Event:
    """One step of an operation.

    ``kind`` names the step (``database``, ``revision``, ``batch``, ``warning``,
    ...); ``message`` is a human sentence; ``data`` carries the numbers a
    renderer may show (rows, totals, revision ids).
    """

    operation: str
    kind: str
    message: str
    data: dict[str, object] = field(default_factory=dict)


Progress = Callable[[Event], None]


def ignore(_event: Event) -> None:
    """The default callback: report nothing."""
