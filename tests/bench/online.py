"""online-migrate benchmark: 100,000 instances with NULL ``compute_id`` on MariaDB.

Baseline in the same run: what Nova's object layer does, one UPDATE and one
COMMIT per instance (``instance.compute_id = node.id; instance.save()``),
measured on a slice of the same rows and reported as rows/s.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import sqlalchemy as sa
from novadb.config import load_settings
from novadb.connections import create_engine
from novadb.online.runner import online_migrate
from novadb.schema.sync import sync

HOSTS = 50


@dataclass(frozen=True)
class OnlineFigures:
    """Rows/s of novadb (at two batch sizes) and of the per-row baseline."""

    rows: int
    novadb_s: float
    novadb_default_s: float
    baseline_rows: int
    baseline_s: float


def fill(url: str, instances: int) -> None:
    """Compute nodes and ``instances`` rows pointing at them, ``compute_id`` NULL."""
    engine = create_engine(url)
    meta = sa.MetaData()
    meta.reflect(engine, only=["instances", "compute_nodes"])
    nodes, inst = meta.tables["compute_nodes"], meta.tables["instances"]
    with engine.begin() as conn:
        conn.execute(sa.insert(nodes), [
            {"id": n + 1, "host": f"host{n}", "hypervisor_hostname": f"node{n}", "vcpus": 8,
             "memory_mb": 1024, "local_gb": 10, "vcpus_used": 0, "memory_mb_used": 0,
             "local_gb_used": 0, "hypervisor_type": "qemu", "hypervisor_version": 1,
             "cpu_info": "{}", "deleted": 0, "uuid": str(uuid.uuid4())}
            for n in range(HOSTS)
        ])  # fmt: skip
    for start in range(0, instances, 10_000):
        with engine.begin() as conn:
            conn.execute(sa.insert(inst), [
                {"id": i + 1, "uuid": str(uuid.uuid4()), "host": f"host{i % HOSTS}",
                 "node": f"node{i % HOSTS}", "deleted": 0, "compute_id": None,
                 "availability_zone": "nova"}
                for i in range(start, min(instances, start + 10_000))
            ])  # fmt: skip
    engine.dispose()


def _reset(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE instances SET compute_id = NULL")
    engine.dispose()


def per_row_baseline(url: str, rows: int) -> float:
    """Nova's way: for each instance, look up its node, UPDATE it, COMMIT."""
    engine = create_engine(url)
    meta = sa.MetaData()
    meta.reflect(engine, only=["instances", "compute_nodes"])
    nodes, inst = meta.tables["compute_nodes"], meta.tables["instances"]
    with engine.connect() as conn:
        todo = conn.execute(
            sa.select(inst.c.id, inst.c.host, inst.c.node)
            .where(inst.c.compute_id.is_(None))
            .limit(rows)
        ).all()
        conn.commit()
        started = time.perf_counter()
        for row in todo:
            node = conn.execute(
                sa.select(nodes.c.id).where(
                    nodes.c.host == row.host, nodes.c.hypervisor_hostname == row.node
                )
            ).scalar()
            conn.execute(sa.update(inst).where(inst.c.id == row.id).values(compute_id=node))
            conn.commit()
        elapsed = time.perf_counter() - started
    engine.dispose()
    return elapsed


def measure(
    instances: int, dbs: Callable[[int], AbstractContextManager[list[str]]]
) -> OnlineFigures:
    """Fill once; time novadb at --batch-size 1000 and at the default 50; then the baseline."""
    with dbs(3) as (main, api, placement):
        settings = load_settings(database=main, api_database=api, placement_database=placement)
        sync(settings)
        fill(main, instances)
        started = time.perf_counter()
        result = online_migrate(settings, database="main", batch_size=1000)
        novadb_s = time.perf_counter() - started
        migrated = next(
            m.done for m in result.migrations if m.name == "populate_instance_compute_id"
        )
        if migrated != instances:
            raise AssertionError(f"migrated {migrated} of {instances}")
        _reset(main)
        started = time.perf_counter()
        online_migrate(settings, database="main")
        default_s = time.perf_counter() - started
        _reset(main)
        baseline_rows = min(instances, 5_000)
        baseline_s = per_row_baseline(main, baseline_rows)
    return OnlineFigures(instances, novadb_s, default_s, baseline_rows, baseline_s)
