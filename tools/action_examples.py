"""Print a `juju run` example per charm action, with the output the charm really produces.

Runs the charm through ./dispatch with the recording hook tools of
tests/charm/test_dispatch.py, on a SQLite sample cloud, and prints each
action's results the way `juju run` shows them (YAML).  check runs on the
demo's cloud at 2025.1 (``novadb.sample.demo.build_cloud``: an online migration to run,
rows to archive, Placement providers under stale uuids).  The Placement actions
run on a third cloud, mapped into cells with Placement filled as Nova would
have left it, then broken: two orphan allocations, three instances' allocations
lost.  tools/docs.py writes them into docs/charm.md (``tox -e docs``);
``python -m tools.action_examples`` prints them.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import yaml
from novadb.config import load_settings
from novadb.connections import create_engine
from novadb.progress import ignore
from novadb.sample.cloud import CloudSpec, populate
from novadb.sample.demo import build_cloud
from novadb.sample.placement import add_orphan_allocations, drop_allocations, populate_placement
from novadb.schema.sync import sync

from tests.charm.test_dispatch import ActionRun, FakeJuju, write_nova_conf
from tests.integration.clouds import build

RUNS: list[tuple[str, dict[str, Any]]] = [
    ("version", {}),
    ("sync", {}),
    ("online-migrate", {}),
    ("archive", {"dry-run": True}),
    ("archive-data", {"batch-size": 1000}),
    ("archive-data", {"batch-size": 1000}),
    ("purge", {"before": "2020-01-01", "dry-run": True}),
    ("purge-data", {}),
    ("purge-data", {}),
    ("null-instance-uuid-scan", {}),
]
# On the demo's cloud.
DEMO_RUNS: list[tuple[str, dict[str, Any]]] = [("check", {})]
DEMO_INSTANCES = 200
# On the Placement cloud; "{base}" is the examples' directory.
PLACEMENT_RUNS: list[tuple[str, dict[str, Any]]] = [
    ("placement-audit", {}),
    ("placement-audit", {"delete": True}),
    ("heal-allocations", {"dry-run": True}),
    ("heal-allocations", {}),
    ("sync-aggregates", {}),
    ("rebuild-placement", {"dry-run": True}),
    ("rebuild-placement", {"backup": "{base}/placement-backup.json.gz"}),
    ("rebuild-placement", {"restore": "{base}/placement-backup.json.gz"}),
]


class _Dumper(yaml.SafeDumper):
    """Multi-line strings as literal blocks, as `juju run` prints them."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def _nested(results: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in sorted(results.items()):
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def _show(action: str, params: dict[str, Any], run: ActionRun) -> None:
    args = " ".join(
        f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in params.items()
    )
    print(f"$ juju run nova-cloud-controller/0 {action} {args}".rstrip())
    for line in run.logs:
        print(line)
    if run.failures:
        print("ERROR", run.failures[0])
    print(yaml.dump(_nested(run.results), Dumper=_Dumper, sort_keys=True, width=200).rstrip())
    print()


def _placement_cloud(base: Path) -> Path:
    """One mapped cell with Placement filled, then broken; returns its nova.conf."""
    names = iter(["nova_api", "placement", "cell1"])
    cloud = build(lambda: f"sqlite:///{base / next(names)}.sqlite", {"cell1": (40, 3)})
    populate_placement(cloud.settings, aggregates=2, seed=3)
    add_orphan_allocations(cloud.placement, 2, seed=1)
    drop_allocations(cloud.settings, 3, seed=1)
    cloud.close()
    s = cloud.settings
    return write_nova_conf(base / "nova.conf", str(s.main), str(s.api), str(s.placement))


def main() -> None:
    base = Path(tempfile.mkdtemp(prefix="novadb-actions-"))
    urls = {n: f"sqlite:///{base}/{n}.sqlite" for n in ("nova", "nova_api", "placement")}
    settings = load_settings(
        database=urls["nova"], api_database=urls["nova_api"], placement_database=urls["placement"]
    )
    sync(settings)
    main_engine, api_engine = create_engine(urls["nova"]), create_engine(urls["nova_api"])
    populate(main_engine, api_engine, CloudSpec(instances=200, seed=7))
    with main_engine.begin() as conn:
        conn.execute(sa.text("UPDATE instances SET compute_id = NULL WHERE id % 3 = 0"))
    (base / "juju").mkdir()
    juju = FakeJuju(base / "juju")
    conf = write_nova_conf(base / "nova.conf", urls["nova"], urls["nova_api"], urls["placement"])
    juju.config["nova-conf"] = str(conf)
    juju.config["openstack-origin"] = "2026.2"
    for action, params in RUNS:
        _show(action, params, juju.run(action, params))

    demo = base / "demo-cloud"
    demo.mkdir()
    s = build_cloud(demo, DEMO_INSTANCES, ignore)
    conf = write_nova_conf(demo / "nova.conf", str(s.main), str(s.api), str(s.placement))
    juju.config["nova-conf"] = str(conf)
    for action, params in DEMO_RUNS:
        _show(action, params, juju.run(action, params))

    placement = base / "placement-cloud"
    placement.mkdir()
    juju.config["nova-conf"] = str(_placement_cloud(placement))
    for action, template in PLACEMENT_RUNS:
        params = {
            k: v.format(base=placement) if isinstance(v, str) else v for k, v in template.items()
        }
        _show(action, params, juju.run(action, params))


if __name__ == "__main__":
    main()
