"""Fixtures of the Placement tests: a populated multi-cell cloud, on both dialects or SQLite."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from novadb.sample.placement import populate_placement

from tests.integration.clouds import Cloud, build


@pytest.fixture
def placement_cloud(new_db: Callable[[], str]) -> Iterator[Cloud]:
    """Two cells (120 and 30 instances), Placement as Nova would have it, two aggregates."""
    c = build(new_db, {"cell1": (120, 4), "cell2": (30, 2)})
    populate_placement(c.settings, aggregates=2, seed=3)
    yield c
    c.close()


@pytest.fixture
def placement_lite(sqlite_db: Callable[[], str]) -> Iterator[Cloud]:
    """SQLite only, one cell of 40 instances on 3 hosts: where the dialect does not matter."""
    c = build(sqlite_db, {"cell1": (40, 3)})
    populate_placement(c.settings, aggregates=1, seed=4)
    yield c
    c.close()
