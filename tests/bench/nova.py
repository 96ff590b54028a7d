"""novadb archive against Nova 34's own ``nova-manage db archive_deleted_rows``, same data.

Needs Nova 34's nova-manage (``.ci/nova-oracle.sh`` installs it; its path in
NOVADB_NOVA_MANAGE).  A smaller cell than the other benchmarks, because
Nova moves a few hundred rows a second.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from novadb.archive.archive import ArchiveOptions, archive_cell
from novadb.connections import create_engine

from tests.bench.archive import _counts, build_cell, clone


def nova_manage() -> str:
    """The nova-manage to compare with."""
    found = os.environ.get("NOVADB_NOVA_MANAGE")
    if found:
        return found
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [str(root / ".ci" / "nova-oracle.sh")], check=True, capture_output=True, text=True
    )
    return out.stdout.strip().splitlines()[-1]


def measure(
    instances: int, dbs: Callable[[int], AbstractContextManager[list[str]]]
) -> tuple[int, float, float]:
    """(rows moved, novadb seconds, Nova seconds) on clones of one generated cell."""
    manage = nova_manage()
    with dbs(3) as (main, api, placement):
        rows = build_cell(main, api, placement, instances)
        with dbs(4) as (cell_a, api_a, cell_b, api_b):
            for source, target in ((main, cell_a), (api, api_a), (main, cell_b), (api, api_b)):
                clone(source, target)
            engine, api_engine = create_engine(cell_a), create_engine(api_a)
            started = time.perf_counter()
            archive_cell(engine, api_engine, ArchiveOptions(until_complete=True))
            ours = time.perf_counter() - started
            engine.dispose()
            api_engine.dispose()
            # Nova's time includes its start-up (a few seconds), as an operator sees it.
            with tempfile.TemporaryDirectory() as tmp:
                conf = Path(tmp) / "nova.conf"
                conf.write_text(
                    f"[database]\nconnection = {cell_b}\n[api_database]\nconnection = {api_b}\n"
                )
                started = time.perf_counter()
                subprocess.run(
                    [manage, "--config-file", str(conf), "db", "archive_deleted_rows",
                     "--until-complete"],
                    check=False, capture_output=True, text=True,
                )  # fmt: skip
                nova = time.perf_counter() - started
            if _counts(cell_a) != _counts(cell_b) or _counts(api_a) != _counts(api_b):
                raise AssertionError("novadb and Nova ended in different states")
    return rows, ours, nova
