"""What the unit runs: the installed Nova package's version and the release it is.

A plain value, apart from nova_package (which talks to apt through charmlibs)
so that charm_results, a pure function of library results, can name the type
without importing apt.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Installed:
    """The installed Nova package: its upstream version and the release it is."""

    version: str
    release: int | None
