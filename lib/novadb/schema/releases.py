"""OpenStack releases and the schema revisions each one first shipped.

``sync --release`` stops at a release's heads, so a unit still running an
older Nova never gets a schema ahead of its code; ``version`` reports the
newest release whose schema a database satisfies.
"""

from __future__ import annotations

from novadb.errors import BadInput
from novadb.schema import revisions

# In order.  (series, codename); series is YYYY.N from 2023.1 on.
RELEASES: list[tuple[str, str]] = [
    ("2021.2", "xena"),
    ("2022.1", "yoga"),
    ("2022.2", "zed"),
    ("2023.1", "antelope"),
    ("2023.2", "bobcat"),
    ("2024.1", "caracal"),
    ("2024.2", "dalmatian"),
    ("2025.1", "epoxy"),
    ("2025.2", "flamingo"),
    ("2026.1", "gazpacho"),
    ("2026.2", "hibiscus"),
]

# First release containing each revision (from Nova's and Placement's history).
FIRST_RELEASE: dict[str, dict[str, str]] = {
    "main": {
        "8f2f1571d55b": "2021.2",
        "16f1fbcab42b": "2022.1",
        "ccb0fa1a2252": "2022.2",
        "960aac0e09ea": "2023.1",
        "1b91788ec3a6": "2023.2",
        "1acf2c98e646": "2023.2",
        "13863f4e1612": "2024.1",
        "d60bddf7a903": "2025.1",
        "2903cd72dc14": "2025.1",
        "ab450ba04102": "2026.2",
    },
    "api": {
        "d67eeaabee36": "2021.2",
        "b30f573d3377": "2022.1",
        "cdeec0c85668": "2023.2",
    },
    "placement": {
        # The first three predate Xena; the oldest release we know is Xena.
        "b4ed3a175331": "2021.2",
        "611cd6dffd7b": "2021.2",
        "b5c396305c25": "2021.2",
        "422ece571366": "2021.2",
        "a082b8bb98d0": "2023.2",
    },
}


def release_index(name: str) -> int:
    """Position of a release given as codename or YYYY.N; BadInput otherwise."""
    key = name.strip().lower()
    for index, (series, codename) in enumerate(RELEASES):
        if key in (series, codename):
            return index
    known = ", ".join(f"{c} ({s})" for s, c in RELEASES)
    raise BadInput(f"unknown release {name!r}; known releases: {known}")


def release_label(index: int) -> str:
    """``2024.1 (caracal)`` style label."""
    series, codename = RELEASES[index]
    return f"{series} ({codename})"


def revisions_in(database: str, index: int) -> set[str]:
    """Revisions of ``database`` that a release (by index) contains."""
    return {
        rev for rev, series in FIRST_RELEASE[database].items() if release_index(series) <= index
    }


def schema_position(database: str, current: str | None, index: int) -> str:
    """Where a database's schema stands against a release's: behind, at or ahead."""
    wanted = revisions_in(database, index)
    if current is None:
        return "behind" if wanted else "at"
    chain = revisions.chain(database)
    done = set(chain[: chain.index(current) + 1]) if current in chain else set()
    if not wanted <= done:
        return "behind"
    return "ahead" if done - wanted else "at"


def release_for_nova_version(version: str) -> int | None:
    """Release index of an installed Nova package version (24.x is Xena, 34.x 2026.2)."""
    try:
        major = int(version.split(":")[-1].split(".")[0])
    except ValueError:
        return None
    index = major - 24
    return index if 0 <= index < len(RELEASES) else None
