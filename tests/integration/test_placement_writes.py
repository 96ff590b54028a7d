"""Placement writes under concurrency: compare-and-swap generations, retried on a lost race."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import os_resource_classes as orc
import pytest
import sqlalchemy as sa
from novadb.config import load_settings
from novadb.connections import engine_for
from novadb.placement.db import (
    ConcurrentUpdate,
    PlacementTables,
    bump_generations,
    class_ids,
    ensure_standard_classes,
    ensure_standard_traits,
    utcnow,
    write,
)
from novadb.schema.sync import sync
from sqlalchemy.engine import Connection, Engine


@pytest.fixture(params=["sqlite", "mariadb"])
def placement_url(request: pytest.FixtureRequest, sqlite_dir: Path) -> str:
    if request.param == "sqlite":
        url = f"sqlite:///{sqlite_dir / 'placement.sqlite'}"
    else:
        url = request.getfixturevalue("mysql_db")
    sync(load_settings(placement_database=url), "placement")
    return url


def _provider(conn: Connection, t: PlacementTables, name: str) -> int:
    conn.execute(sa.insert(t.providers).values(uuid=f"{name:0>36}"[-36:], name=name, generation=0))
    rp_id = conn.execute(
        sa.select(t.providers.c.id).where(t.providers.c.name == name)
    ).scalar_one()
    conn.execute(
        sa.update(t.providers).where(t.providers.c.id == rp_id).values(root_provider_id=rp_id)
    )
    return int(rp_id)


def _generation(engine: Engine, t: PlacementTables, rp_id: int) -> int:
    with engine.connect() as conn:
        query = sa.select(t.providers.c.generation).where(t.providers.c.id == rp_id)
        return int(conn.execute(query).scalar_one())


def test_standard_classes_get_placements_ids_including_zero(placement_url: str) -> None:
    with engine_for(placement_url) as engine:
        t = PlacementTables(engine)
        with engine.begin() as conn:
            assert ensure_standard_classes(conn, t) == len(orc.STANDARDS)
            assert ensure_standard_traits(conn, t) > 300
            assert ensure_standard_classes(conn, t) == 0
            assert ensure_standard_traits(conn, t) == 0
            ids = class_ids(conn, t)
        assert ids == {name: index for index, name in enumerate(orc.STANDARDS)}
        assert ids["VCPU"] == 0


def test_bump_refuses_a_generation_someone_else_moved(placement_url: str) -> None:
    with engine_for(placement_url) as engine:
        t = PlacementTables(engine)
        with engine.begin() as conn:
            a, b = _provider(conn, t, "a"), _provider(conn, t, "b")
        with engine.begin() as conn:
            bump_generations(conn, t.providers, {a: 0, b: 0})
        assert (_generation(engine, t, a), _generation(engine, t, b)) == (1, 1)
        with pytest.raises(ConcurrentUpdate, match="1 of 2 rows changed"), engine.begin() as conn:
            bump_generations(conn, t.providers, {a: 1, b: 0})
        # The failed swap rolled back with its transaction: nothing moved.
        assert (_generation(engine, t, a), _generation(engine, t, b)) == (1, 1)


def _allocate(t: PlacementTables, rp_id: int, consumer: str, vcpu: int) -> Callable:
    def work(conn: Connection) -> None:
        gen = conn.execute(
            sa.select(t.providers.c.generation).where(t.providers.c.id == rp_id)
        ).scalar_one()
        conn.execute(
            sa.insert(t.allocations).values(
                resource_provider_id=rp_id,
                consumer_id=consumer,
                resource_class_id=vcpu,
                used=1,
                created_at=utcnow(),
            )
        )
        bump_generations(conn, t.providers, {rp_id: gen})

    return work


def test_a_lost_race_is_redone_from_a_fresh_read(placement_url: str) -> None:
    """Another writer bumps the provider between our read and our swap: we redo, both land."""
    with engine_for(placement_url) as engine:
        t = PlacementTables(engine)
        with engine.begin() as conn:
            ensure_standard_classes(conn, t)
            rp = _provider(conn, t, "node")
        vcpu = 0
        attempts = []

        def racing(conn: Connection) -> None:
            gen = conn.execute(
                sa.select(t.providers.c.generation).where(t.providers.c.id == rp)
            ).scalar_one()
            attempts.append(gen)
            if len(attempts) == 1:  # the other writer commits right after our read
                other = threading.Thread(
                    target=write, args=(engine, _allocate(t, rp, "c" * 36, vcpu))
                )
                other.start()
                other.join()
            conn.execute(
                sa.insert(t.allocations).values(
                    resource_provider_id=rp, consumer_id="d" * 36, resource_class_id=vcpu, used=2
                )
            )
            bump_generations(conn, t.providers, {rp: gen})

        if engine.dialect.name == "sqlite":
            pytest.skip("SQLite serialises writers: the other one cannot commit mid-transaction")
        retries: list[BaseException | None] = []
        write(engine, racing, on_retry=retries.append)
        assert attempts == [0, 1]
        assert len(retries) == 1 and isinstance(retries[0], ConcurrentUpdate)
        assert _generation(engine, t, rp) == 2
        with engine.connect() as conn:
            rows = conn.execute(
                sa.select(t.allocations.c.consumer_id, t.allocations.c.used).order_by(
                    t.allocations.c.consumer_id
                )
            ).all()
        assert [tuple(r) for r in rows] == [("c" * 36, 1), ("d" * 36, 2)]


@pytest.mark.parametrize("writers", [8])
def test_concurrent_writers_never_lose_a_generation(placement_url: str, writers: int) -> None:
    """N threads allocate on one provider at once: N bumps, N allocations, nothing lost."""
    with engine_for(placement_url) as engine:
        t = PlacementTables(engine)
        with engine.begin() as conn:
            rp = _provider(conn, t, "busy")
        errors: list[BaseException] = []

        def worker(n: int) -> None:
            try:
                for k in range(5):
                    write(
                        engine, _allocate(t, rp, f"{n:02d}{k:02d}".ljust(36, "0"), 0), attempts=50
                    )
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(writers)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert errors == []
        assert _generation(engine, t, rp) == writers * 5
        with engine.connect() as conn:
            count = conn.execute(sa.select(sa.func.count()).select_from(t.allocations)).scalar()
        assert count == writers * 5
