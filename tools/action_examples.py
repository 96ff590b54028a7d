"""Print a `juju run` example per charm action, with the output the charm really produces.

Runs the charm through ./dispatch with the recording hook tools of
tests/charm/test_dispatch.py, on a SQLite sample cloud, and prints each
action's results the way `juju run` shows them (YAML).  Used to write the
README's action examples:  python -m tools.action_examples
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import yaml
from novadb.config import load_settings
from novadb.connections import create_engine
from novadb.sample_cloud import CloudSpec, populate
from novadb.sync import sync

from tests.charm.test_dispatch import FakeJuju, write_nova_conf

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
        run = juju.run(action, params)
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


if __name__ == "__main__":
    main()
