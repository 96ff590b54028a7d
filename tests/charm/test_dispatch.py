"""The charm run the way Juju runs it: a packed charm directory, ``./dispatch``, hook tools.

Scenario (test_actions.py) runs the charm class in-process with a simulated
model; here nothing is simulated but the Juju agent.  The charm directory is
laid out as ``charmcraft pack`` lays it out (metadata.yaml, config.yaml and
actions.yaml at the top, src/, lib/, dispatch), ``./dispatch`` is executed
with the environment Juju gives an action, and every hook tool is a small
executable on PATH that records its call and answers like Juju's would.  So
these tests see what an operator and COU would see: the ``action-set``
arguments, ``action-log`` lines, ``action-fail`` messages and ``status-set``
calls, and the real end state of the databases.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from novadb.config import Settings, load_settings
from novadb.connections import create_engine, mask
from novadb.sample.cloud import CloudSpec, GeneratedCell, populate
from novadb.sample.placement import add_orphan_allocations, drop_allocations
from novadb.schema.sync import sync

from tests.charm.demo_cloud import DemoCloud
from tests.charm.placement_cloud import PlacementCloud

ROOT = Path(__file__).resolve().parents[2]
CHARMCRAFT: dict[str, Any] = yaml.safe_load((ROOT / "charmcraft.yaml").read_text())
ACTIONS: dict[str, Any] = yaml.safe_load((ROOT / "actions.yaml").read_text())
UNIT = "nova-cloud-controller/1"
# The status after an action on databases at head, credentials from nova.conf.
AT_HEAD = "schema at head; matches installed 2026.2 (hibiscus); credentials: nova.conf"
MODEL_UUID = "5a1f2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
# Keys of charmcraft.yaml that `charmcraft pack` moves into metadata.yaml.
METADATA_KEYS = (
    "name", "title", "summary", "description", "assumes", "containers", "devices",
    "extra-bindings", "peers", "provides", "requires", "resources", "storage", "subordinate",
    "terms", "charm-user",
)  # fmt: skip
# charmcraft.yaml `links` become these metadata.yaml keys.
LINK_KEYS = {
    "documentation": "docs",
    "issues": "issues",
    "source": "source",
    "website": "website",
    "contact": "maintainers",
}
# Every hook tool a Juju 3.6 unit agent provides.  The fake agent answers the
# ones ops needs for this charm; any other records its call and fails loudly.
ALL_HOOK_TOOLS = (
    "action-fail", "action-get", "action-log", "action-set", "add-metric",
    "application-version-set", "close-port", "config-get", "credential-get", "goal-state",
    "is-leader", "juju-log", "juju-reboot", "k8s-raw-get", "k8s-raw-set", "k8s-spec-get",
    "k8s-spec-set", "leader-get", "leader-set", "network-get", "open-port", "opened-ports",
    "payload-register", "payload-status-set", "payload-unregister", "pod-spec-get",
    "pod-spec-set", "relation-get", "relation-ids", "relation-list", "relation-model-get",
    "relation-set", "resource-get", "secret-add", "secret-get", "secret-grant", "secret-ids",
    "secret-info-get", "secret-remove", "secret-revoke", "secret-set", "state-delete",
    "state-get", "state-set", "status-get", "status-set", "storage-add", "storage-get",
    "storage-list", "unit-get",
)  # fmt: skip
ANSWERED_TOOLS = frozenset({
    "action-fail", "action-get", "action-log", "action-set", "application-version-set",
    "config-get", "is-leader", "juju-log", "network-get", "relation-get", "relation-ids",
    "relation-list", "relation-set", "secret-get", "status-get", "status-set",
})  # fmt: skip
# dpkg as the charm's apt library runs it: the architecture, and `dpkg -l PACKAGE`
# answered from packages.json (name -> Debian version; absent: not installed).
DPKG = r"""
import json
import sys
from pathlib import Path

agent = Path(sys.argv[0]).parent.parent
argv = sys.argv[1:]
if argv == ["--print-architecture"]:
    print("amd64")
    sys.exit(0)
if len(argv) == 2 and argv[0] == "-l":
    version = json.loads((agent / "packages.json").read_text()).get(argv[1])
    if version is None:
        print(f"dpkg-query: no packages found matching {argv[1]}", file=sys.stderr)
        sys.exit(1)
    print("Desired=Unknown/Install/Remove/Purge/Hold")
    print("| Status=Not/Inst/Conf-files/Unpacked/halF-conf/Half-inst/trig-aWait/Trig-pend")
    print("|/ Err?=(none)/Reinst-required (Status,Err: uppercase=bad)")
    print("||/ Name           Version           Architecture Description")
    print("+++-==============-=================-============-=========================")
    print(f"ii  {argv[1]}    {version} all          OpenStack Compute - common files")
    sys.exit(0)
print(f"fake dpkg: unexpected arguments {argv}", file=sys.stderr)
sys.exit(2)
"""

# One script for every tool; its file name says which tool it is.  It keeps
# Juju's argument checks where a charm could trip on them (action-set keys,
# status names), so a call Juju would refuse fails here too.
HOOK_TOOL = r'''
"""A Juju hook tool stand-in: record the call as a JSON line, answer from the test's files."""
import json
import re
import sys
from pathlib import Path

tool = Path(sys.argv[0]).name
agent = Path(sys.argv[0]).parent.parent
argv = sys.argv[1:]
stdin = sys.stdin.read() if sys.stdin is not None and not sys.stdin.isatty() else ""
with open(agent / "calls.jsonl", "a", encoding="utf-8") as calls:
    calls.write(json.dumps({"tool": tool, "argv": argv, "stdin": stdin}) + "\n")
positional = [a for a in argv if not a.startswith("-")]


def load(name):
    return json.loads((agent / name).read_text())


def refuse(message, code=1):
    print(f"ERROR {message}", file=sys.stderr)
    sys.exit(code)


if tool == "action-get":
    params = load("action-params.json")
    print(json.dumps(params[positional[0]] if positional else params))
elif tool == "config-get":
    config = load("config.json")
    print(json.dumps(config[positional[0]] if positional else config))
elif tool == "is-leader":
    print("false")
elif tool == "status-get":
    print(json.dumps({"message": "", "status": "unknown", "status-data": {}}))
elif tool == "secret-get":
    wanted = positional[0] if positional else ""
    xid = wanted.removeprefix("secret:").rsplit("/", 1)[-1]
    secrets = load("secrets.json")
    if xid not in secrets:
        refuse(f'secret "{xid}" not found')
    print(json.dumps(secrets[xid]))
elif tool == "action-set":
    segment = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$")
    for arg in argv:
        key, sep, _value = arg.partition("=")
        if not sep:
            refuse(f'argument "{arg}" must be of the form key=value', 2)
        if not all(segment.match(part) for part in key.split(".")):
            refuse(
                f'key "{key}" must start and end with lowercase alphanumeric, '
                "and contain only lowercase alphanumeric, hyphens and periods",
                2,
            )
        if key.split(".")[0] in ("stdout", "stderr", "stdout-encoding", "stderr-encoding"):
            refuse(f'cannot set reserved action key "{key}"', 2)
elif tool == "status-set":
    if not positional or positional[0] not in ("maintenance", "blocked", "waiting", "active"):
        refuse(f"invalid status {positional[:1]}", 2)
elif tool == "relation-ids":
    relation = load("relations.json").get(positional[0])
    print(json.dumps([f"{positional[0]}:{relation['id']}"] if relation else []))
elif tool in ("relation-list", "relation-get", "relation-set"):
    ref = argv[argv.index("-r") + 1]
    relation = next(
        (r for r in load("relations.json").values() if str(r["id"]) == ref.split(":")[-1]), None
    )
    if relation is None:
        refuse(f"invalid value {ref!r} for option -r: relation not found", 2)
    if tool == "relation-list":
        print(json.dumps(relation["app"] if "--app" in argv else sorted(relation["units"])))
    elif tool == "relation-get":
        member = positional[-1]
        if "--app" in argv:
            data = relation["app_data"] if member.split("/")[0] == relation["app"] else {}
        else:
            data = relation["units"].get(member, relation["local"].get(member, {}))
        print(json.dumps(data))
elif tool == "network-get":
    address = {"hostname": "", "value": "10.5.0.21", "cidr": "10.5.0.0/24"}
    print(json.dumps({
        "bind-addresses": [
            {"mac-address": "", "interface-name": "eth0", "addresses": [address]}
        ],
        "egress-subnets": ["10.5.0.21/32"],
        "ingress-addresses": ["10.5.0.21"],
    }))
elif tool in ("action-fail", "action-log", "juju-log", "application-version-set"):
    pass
else:
    refuse(f"{tool} is not provided by the test's fake Juju agent (argv {argv})", 3)
'''


@dataclass
class Call:
    """One hook tool invocation."""

    tool: str
    argv: list[str]
    stdin: str

    def message(self) -> str:
        """The argument after ``--`` (action-log, action-fail, juju-log, status-set)."""
        return self.argv[self.argv.index("--") + 1] if "--" in self.argv else ""


@dataclass
class ActionRun:
    """What one ``./dispatch`` of an action did, as Juju's agent saw it."""

    returncode: int
    stdout: str
    stderr: str
    calls: list[Call] = field(default_factory=list)

    def of(self, tool: str) -> list[Call]:
        return [c for c in self.calls if c.tool == tool]

    def assert_succeeded(self) -> None:
        """Exit 0, never action-fail, and nothing on stdout/stderr (Juju shows both)."""
        assert self.returncode == 0, self.stderr
        assert self.failures == []
        assert (self.stdout, self.stderr) == ("", "")

    @property
    def results(self) -> dict[str, str]:
        """The action's results: every ``action-set key=value`` argument, merged."""
        out: dict[str, str] = {}
        for call in self.of("action-set"):
            for arg in call.argv:
                key, _, value = arg.partition("=")
                out[key] = value
        return out

    @property
    def logs(self) -> list[str]:
        return [c.message() for c in self.of("action-log")]

    @property
    def failures(self) -> list[str]:
        return [c.message() for c in self.of("action-fail")]

    @property
    def statuses(self) -> list[tuple[str, str]]:
        """``(status, message)`` of every unit ``status-set``."""
        out = []
        for call in self.of("status-set"):
            positional = [a for a in call.argv if not a.startswith("--")]
            assert "--application=False" in call.argv, call.argv  # never the app: not leader
            out.append((positional[0], call.message()))
        return out

    @property
    def juju_log(self) -> list[str]:
        return [c.message() for c in self.of("juju-log")]

    @property
    def tools(self) -> set[str]:
        return {c.tool for c in self.calls}


def action_defaults(action: str) -> dict[str, Any]:
    """The params Juju fills in from actions.yaml's defaults before the charm runs."""
    params = ACTIONS[action].get("params", {})
    return {name: spec["default"] for name, spec in params.items() if "default" in spec}


def config_defaults() -> dict[str, Any]:
    """``config-get`` of a fresh application: every option that has a default."""
    options = CHARMCRAFT["config"]["options"]
    return {name: spec["default"] for name, spec in options.items() if "default" in spec}


def pack_charm(dest: Path) -> Path:
    """A charm directory as `charmcraft pack` lays it out (the dependencies: the test venv's)."""
    dest.mkdir()
    shutil.copytree(ROOT / "src", dest / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(
        ROOT / "lib" / "novadb",
        dest / "lib" / "novadb",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    # charmcraft copies every file of the project that .jujuignore does not
    # exclude; lib/novadb finds its Alembic environments next to lib/.
    shutil.copytree(
        ROOT / "migrations", dest / "migrations", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy2(ROOT / "dispatch", dest / "dispatch")
    metadata = {k: CHARMCRAFT[k] for k in METADATA_KEYS if k in CHARMCRAFT}
    for link, key in LINK_KEYS.items():
        if link in CHARMCRAFT.get("links", {}):
            metadata[key] = CHARMCRAFT["links"][link]
    (dest / "metadata.yaml").write_text(yaml.safe_dump(metadata, sort_keys=False))
    (dest / "config.yaml").write_text(yaml.safe_dump(CHARMCRAFT["config"], sort_keys=False))
    shutil.copy2(ROOT / "actions.yaml", dest / "actions.yaml")
    return dest


class FakeJuju:
    """A unit agent for one charm directory: hook tools on PATH and the action environment."""

    def __init__(self, base: Path) -> None:
        self.charm_dir = pack_charm(base / "charm")
        self.agent = base / "agent"
        self.bin = self.agent / "bin"
        self.bin.mkdir(parents=True)
        script = f"#!{sys.executable}\n{HOOK_TOOL.lstrip()}"
        for tool in ALL_HOOK_TOOLS:
            path = self.bin / tool
            path.write_text(script)
            path.chmod(0o755)
        dpkg = self.bin / "dpkg"
        dpkg.write_text(f"#!{sys.executable}\n{DPKG.lstrip()}")
        dpkg.chmod(0o755)
        self.secrets: dict[str, dict[str, str]] = {}
        # nova-common as Ubuntu's 2026.2 packages it (Nova 34).
        self.packages: dict[str, str] = {"nova-common": "3:34.0.0-0ubuntu1"}
        # endpoint -> {"id", "app", "units": {unit: data}, "app_data", "local": {unit: data}}
        self.relations: dict[str, dict[str, Any]] = {}
        self.config: dict[str, Any] = config_defaults()
        self.tools_called: set[str] = set()
        self._runs = 0

    def env(self, action: str) -> dict[str, str]:
        """The environment Juju 3.6 gives an action's dispatch (nothing inherited)."""
        self._runs += 1
        return {
            "PATH": f"{self.bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8",
            "JUJU_DISPATCH_PATH": f"actions/{action}",
            "JUJU_HOOK_NAME": "",
            "JUJU_ACTION_NAME": action,
            "JUJU_ACTION_UUID": str(self._runs),
            "JUJU_UNIT_NAME": UNIT,
            "JUJU_MODEL_NAME": "openstack",
            "JUJU_MODEL_UUID": MODEL_UUID,
            "JUJU_VERSION": "3.6.0",
            "JUJU_CHARM_DIR": str(self.charm_dir),
            "CHARM_DIR": str(self.charm_dir),
            "JUJU_CONTEXT_ID": f"{UNIT}-run-action-{self._runs}",
            "JUJU_AGENT_SOCKET_ADDRESS": "@/var/lib/juju/agents/unit-nova-cloud-controller-1/sock",
            "JUJU_AGENT_SOCKET_NETWORK": "unix",
            "JUJU_API_ADDRESSES": "10.5.0.10:17070",
            "JUJU_MACHINE_ID": "1",
            "JUJU_PRINCIPAL_UNIT": "",
            "JUJU_AVAILABILITY_ZONE": "zone1",
            "NOVADB_CHARM_PYTHON": sys.executable,
        }

    def run(
        self,
        action: str,
        params: dict[str, Any] | None = None,
        env: dict[str, str | None] | None = None,
    ) -> ActionRun:
        """``juju run nova-cloud-controller/1 <action> <params>``: dispatch once, collect calls."""
        full = {**action_defaults(action), **(params or {})}
        (self.agent / "action-params.json").write_text(json.dumps(full))
        (self.agent / "config.json").write_text(json.dumps(self.config))
        (self.agent / "secrets.json").write_text(json.dumps(self.secrets))
        (self.agent / "packages.json").write_text(json.dumps(self.packages))
        (self.agent / "relations.json").write_text(json.dumps(self.relations))
        calls_file = self.agent / "calls.jsonl"
        calls_file.write_text("")
        environ = self.env(action)
        for key, value in (env or {}).items():
            if value is None:
                environ.pop(key, None)
            else:
                environ[key] = value
        proc = subprocess.run(
            ["./dispatch"],
            cwd=self.charm_dir,
            env=environ,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=600,
        )
        calls = [Call(**json.loads(line)) for line in calls_file.read_text().splitlines()]
        run = ActionRun(proc.returncode, proc.stdout, proc.stderr, calls)
        self.tools_called |= run.tools
        unexpected = run.tools - ANSWERED_TOOLS
        assert not unexpected, f"ops called hook tools the fake agent does not answer: {run.calls}"
        return run


@pytest.fixture
def juju(tmp_path: Path) -> Iterator[FakeJuju]:
    fake = FakeJuju(tmp_path)
    yield fake
    # Shown with -rA / on failure: the hook tools ops needed for these actions.
    print(f"hook tools called: {sorted(fake.tools_called)}")


def write_nova_conf(path: Path, main: str, api: str, placement: str) -> Path:
    path.write_text(
        f"[DEFAULT]\ndebug = false\n\n[database]\nconnection = {main}\n\n"
        f"[api_database]\nconnection = {api}\n\n[placement_database]\nconnection = {placement}\n"
    )
    return path


def count(engine: sa.Engine, sql: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(sql)).scalar_one())


def table_counts(engine: sa.Engine) -> dict[str, int]:
    """Rows per table: what a run that changed nothing leaves exactly as it was."""
    with engine.connect() as conn:
        names = sa.inspect(conn).get_table_names()
        return {
            n: int(conn.execute(sa.text(f"SELECT count(*) FROM {n}")).scalar_one()) for n in names
        }


def archive_table(rows: dict[str, int]) -> str:
    """nova-manage's ``archive_deleted_rows --verbose`` table (PrettyTable, left-aligned)."""
    items = sorted(rows.items())
    width = max(len("Table"), *(len(k) for k, _ in items))
    count_width = max(len("Number of Rows Archived"), *(len(str(v)) for _, v in items))
    rule = f"+{'-' * (width + 2)}+{'-' * (count_width + 2)}+"
    lines = [rule, f"| {'Table':<{width}} | {'Number of Rows Archived':<{count_width}} |", rule]
    lines += [f"| {k:<{width}} | {v!s:<{count_width}} |" for k, v in items]
    return "\n".join([*lines, rule])


@dataclass
class Cloud:
    """Three MariaDB databases, the nova.conf naming them, and engines to inspect them."""

    settings: Settings
    conf: Path
    main: sa.Engine
    api: sa.Engine
    placement: sa.Engine


@pytest.fixture
def mariadb_cloud(mysql_dbs: Callable[[], str], tmp_path: Path) -> Iterator[Cloud]:
    urls = [mysql_dbs() for _ in range(3)]
    conf = write_nova_conf(tmp_path / "nova.conf", *urls)
    engines = [create_engine(u) for u in urls]
    yield Cloud(load_settings([str(conf)]), conf, *engines)
    for engine in engines:
        engine.dispose()


def expected_archive_rows(cloud: Cloud, gen: GeneratedCell, spec: CloudSpec) -> dict[str, int]:
    """What a complete archive of a fresh sample cloud moves, from how it was generated.

    Every deleted instance moves with all its children (orphans too: children
    follow their parent whatever their own ``deleted``); an orphan's
    ``instance_id_mappings`` row stays live, being its own root and not deleted.
    Faults and migrations are random per instance, so they are counted.
    """
    deleted = gen.deleted_instances
    faults = count(
        cloud.main,
        "SELECT count(*) FROM instance_faults f JOIN instances i ON f.instance_uuid = i.uuid "
        "WHERE i.deleted != 0",
    )
    migrations = count(
        cloud.main,
        "SELECT count(*) FROM migrations m JOIN instances i ON m.instance_uuid = i.uuid "
        "WHERE i.deleted != 0",
    )
    groups = count(
        cloud.api,
        "SELECT count(*) FROM instance_group_member g WHERE g.instance_uuid IN "
        "(SELECT instance_uuid FROM instance_mappings WHERE queued_for_delete = 1)",
    )
    rows = {
        "API_DB.instance_group_member": groups,
        "API_DB.instance_mappings": deleted,
        "API_DB.request_specs": deleted,
        "block_device_mapping": deleted,
        "compute_nodes": spec.deleted_hosts,
        "instance_actions": 2 * deleted,
        "instance_actions_events": 2 * deleted,
        "instance_extra": deleted,
        "instance_faults": faults,
        "instance_id_mappings": deleted - gen.orphaned_instances,
        "instance_info_caches": deleted,
        "instance_metadata": 2 * deleted,
        "instance_system_metadata": 8 * deleted,
        "instances": deleted,
        "migrations": migrations,
        "services": spec.deleted_hosts,
        "virtual_interfaces": deleted,
    }
    return {k: v for k, v in rows.items() if v or k.startswith("API_DB.")}


def result_key(table: str) -> str:
    return "rows." + table.lower().replace("_", "-")


def shadow_tables(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        return sorted(n for n in sa.inspect(conn).get_table_names() if n.startswith("shadow_"))


def test_sync_archive_data_purge_data_as_juju_and_cou_run_them(
    juju: FakeJuju, mariadb_cloud: Cloud
) -> None:
    cloud = mariadb_cloud
    juju.config.update({"nova-conf": str(cloud.conf)})

    # sync: the three empty databases to the installed release (2026.2: every head).
    run = juju.run("sync")
    run.assert_succeeded()
    assert run.results == {
        "release": "2026.2",
        "databases.api.before": "none",
        "databases.api.after": "cdeec0c85668",
        "databases.api.applied": "3",
        "databases.main.before": "none",
        "databases.main.after": "ab450ba04102",
        "databases.main.applied": "10",
        "databases.placement.before": "none",
        "databases.placement.after": "a082b8bb98d0",
        "databases.placement.applied": "5",
        "applied": "18",
    }
    assert run.logs[0] == f"api ({mask(cloud.settings.url('api'))}): empty -> cdeec0c85668"
    assert run.tools == {
        "action-get", "config-get", "juju-log", "action-log", "action-set", "is-leader",
        "status-set", "relation-ids", "application-version-set",
    }  # fmt: skip
    assert run.statuses == [("active", AT_HEAD)]
    for engine, head in ((cloud.api, "cdeec0c85668"), (cloud.main, "ab450ba04102")):
        assert count(engine, f"SELECT count(*) FROM alembic_version WHERE version_num = '{head}'")
    assert count(cloud.placement, "SELECT count(*) FROM alembic_version") == 1

    spec = CloudSpec(instances=300, seed=11)
    gen = populate(cloud.main, cloud.api, spec)
    expected = expected_archive_rows(cloud, gen, spec)
    live_before = table_counts(cloud.main)

    # COU's loop: archive-data with its batch size until the terminator shows.
    runs: list[ActionRun] = []
    while True:
        assert len(runs) < 5, [r.results.get("archive-deleted-rows") for r in runs]
        run = juju.run("archive-data", {"batch-size": 50})
        run.assert_succeeded()
        assert "archive-deleted-rows" in run.results
        runs.append(run)
        if "Nothing was archived" in run.results["archive-deleted-rows"]:
            break
    assert len(runs) == 1  # the charm archives until complete and says so at once
    first = runs[0]
    total = sum(v for k, v in expected.items() if not k.startswith("API_DB."))
    results = first.results
    assert float(results.pop("elapsed")) >= 0
    assert results == {
        "total": str(total),
        "batches": results["batches"],
        "complete": "true",
        "dry-run": "false",
        **{result_key(t): str(n) for t, n in expected.items()},
        "archive-deleted-rows": archive_table(expected)
        + "\nArchive complete: Nothing was archived in the final pass.",
    }
    # 150-odd deleted instances in batches of at most 50, plus the other roots.
    assert int(results["batches"]) >= -(-gen.deleted_instances // 50) + 3
    assert first.logs, "archive-data streams progress with action-log"
    assert first.logs[-1].endswith(f"(total {total})")
    assert first.statuses == [("active", AT_HEAD)]

    # The end state: no deleted row left live, every moved row in its shadow table.
    assert count(cloud.main, "SELECT count(*) FROM instances WHERE deleted != 0") == 0
    assert count(cloud.main, "SELECT count(*) FROM shadow_instances") == gen.deleted_instances
    live_after = table_counts(cloud.main)
    for table, n in expected.items():
        if table.startswith("API_DB."):
            continue
        assert live_before[table] - live_after[table] == n, table
        assert live_after[f"shadow_{table}"] == n, table
    assert (
        count(cloud.api, "SELECT count(*) FROM instance_mappings") == 300 - gen.deleted_instances
    )

    # purge-data, no before: every shadow row goes, listed nova-manage's way.
    run = juju.run("purge-data")
    run.assert_succeeded()
    shadow_expected = {f"shadow_{t}": n for t, n in expected.items() if "." not in t}
    results = run.results
    assert float(results.pop("elapsed")) >= 0
    assert results == {
        "total": str(total),
        "dry-run": "false",
        **{result_key(t): str(n) for t, n in shadow_expected.items()},
        "output": "\n".join(
            f"DB: Deleted {n} rows from {t} based on timestamp column (n/a)"
            for t, n in sorted(shadow_expected.items())
        ),
    }
    for table in shadow_tables(cloud.main):
        assert count(cloud.main, f"SELECT count(*) FROM {table}") == 0, table

    # COU's second look: nothing left, in the words COU matches.
    run = juju.run("purge-data")
    run.assert_succeeded()
    assert run.results["output"] == "Purging stale soft-deleted rows and no data was deleted"
    assert run.results["total"] == "0"
    assert ("active", AT_HEAD) in run.statuses
    assert juju.tools_called <= ANSWERED_TOOLS


def test_bad_before_fails_the_action_and_touches_nothing(
    juju: FakeJuju, mariadb_cloud: Cloud
) -> None:
    cloud = mariadb_cloud
    sync(cloud.settings)
    populate(cloud.main, cloud.api, CloudSpec(instances=60, seed=3))
    before = (table_counts(cloud.main), table_counts(cloud.api))
    juju.config.update({"nova-conf": str(cloud.conf)})

    run = juju.run("archive", {"before": "garbage"})

    # A failed action is not a failed hook: ops exits 0 after action-fail.
    assert (run.returncode, run.stdout, run.stderr) == (0, "", "")
    assert run.failures == [
        "Invalid value for --before: String does not contain a date: garbage; "
        "give a date such as 2024-01-31 or '2024-01-31 12:00'"
    ]
    assert run.of("action-set") == []
    assert run.tools == {
        "action-get", "config-get", "juju-log", "action-fail", "is-leader", "status-set",
        "relation-ids", "application-version-set",
    }  # fmt: skip
    assert run.statuses == [("active", AT_HEAD)]
    assert (table_counts(cloud.main), table_counts(cloud.api)) == before


@pytest.fixture
def sqlite_cloud(tmp_path: Path) -> Iterator[Cloud]:
    d = tmp_path / "db"
    d.mkdir()
    urls = [f"sqlite:///{d / n}.sqlite" for n in ("nova", "nova_api", "placement")]
    conf = write_nova_conf(tmp_path / "nova.conf", *urls)
    settings = load_settings([str(conf)])
    sync(settings)
    engines = [create_engine(u) for u in urls]
    yield Cloud(settings, conf, *engines)
    for engine in engines:
        engine.dispose()


def test_dispatch_runs_without_novadb_charm_python(
    juju: FakeJuju, sqlite_cloud: Cloud, tmp_path: Path
) -> None:
    # The unit's python3 (here: the test venv's, which has ops and the dependencies).
    shim = tmp_path / "python-bin"
    shim.mkdir()
    (shim / "python3").write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    (shim / "python3").chmod(0o755)
    juju.config.update({"nova-conf": str(sqlite_cloud.conf)})
    path = f"{juju.bin}:{shim}:/usr/bin:/bin"
    run = juju.run("version", env={"NOVADB_CHARM_PYTHON": None, "PATH": path})
    run.assert_succeeded()
    assert run.results["pending"] == "0"


def test_database_secret_from_secret_get_overrides_nova_conf(
    juju: FakeJuju, sqlite_cloud: Cloud, tmp_path: Path
) -> None:
    # nova.conf names databases that do not exist; the secret names the real ones.
    bogus = tmp_path / "absent"
    conf = write_nova_conf(
        tmp_path / "other.conf",
        *(f"sqlite:///{bogus / n}.sqlite" for n in ("nova", "nova_api", "placement")),
    )
    xid = uuid.uuid4().hex[:20]
    s = sqlite_cloud.settings
    juju.secrets[xid] = {
        "connection": s.url("main"),
        "api-connection": s.url("api"),
        "placement-connection": s.url("placement"),
    }
    juju.config.update({"nova-conf": str(conf), "database-secret": f"secret:{xid}"})
    run = juju.run("version")
    run.assert_succeeded()
    assert run.results["pending"] == "0"
    assert run.statuses == [("active", AT_HEAD.replace("nova.conf", "database-secret"))]
    assert any(c.tool == "secret-get" for c in run.calls)
    assert not bogus.exists()


def test_placement_actions_as_juju_runs_them(juju: FakeJuju, pcloud: PlacementCloud) -> None:
    """Juju's defaults filled in, every result key past action-set's checks, failures as Juju's.

    Orphans deleted, lost allocations healed, a bad param refused, the
    aggregates checked, Placement rebuilt into a backup and restored from it.
    """
    at_head = ("active", AT_HEAD)
    juju.config.update({"nova-conf": str(pcloud.conf)})
    orphans = add_orphan_allocations(pcloud.cloud.placement, 2, seed=1)
    lost = drop_allocations(pcloud.cloud.settings, 2, seed=1)

    run = juju.run("placement-audit", {"delete": True})
    run.assert_succeeded()
    assert (run.results["exit-code"], run.results["deleted.consumers"]) == ("4", "2")
    assert {run.results["findings.00.consumer"], run.results["findings.01.consumer"]} == set(
        orphans.consumers
    )
    assert run.statuses == [at_head]

    run = juju.run("heal-allocations")
    run.assert_succeeded()
    assert (run.results["exit-code"], run.results["healed"]) == ("0", "2")
    assert {run.results["allocations.00.instance"], run.results["allocations.01.instance"]} == set(
        lost.consumers
    )

    run = juju.run("heal-allocations", {"force": True})
    assert (run.returncode, run.stdout, run.stderr) == (0, "", "")
    assert run.failures == ["The --instance flag is required when using --force flag."]
    assert run.of("action-set") == []

    run = juju.run("sync-aggregates")
    run.assert_succeeded()
    assert (run.results["exit-code"], run.results["added"]) == ("0", "0")

    before = pcloud.snapshot()
    backup = pcloud.base / "placement.json.gz"
    run = juju.run("rebuild-placement", {"backup": str(backup)})
    run.assert_succeeded()
    assert (run.results["exit-code"], run.results["backup.path"]) == ("0", str(backup))
    assert run.results["steps.7.summary"] == "clean"
    assert backup.is_file()

    run = juju.run("rebuild-placement", {"restore": str(backup), "dry-run": True})
    assert run.failures == [
        "restore takes no other rebuild-placement param (backup, dry-run, force)"
    ]
    run = juju.run("rebuild-placement", {"restore": str(backup)})
    run.assert_succeeded()
    assert (run.results["exit-code"], run.results["path"]) == ("0", str(backup))
    assert pcloud.snapshot() == before
    assert run.statuses == [at_head]


def test_check_as_juju_runs_it(juju: FakeJuju, demo: DemoCloud) -> None:
    """A report: blockers (exit-code 2) and warnings (1) both leave the action succeeded.

    The demo's cloud at 2025.1 has an online migration to run: check says so
    as a blocker, online-migrate runs it, and check no longer does.
    """
    juju.config.update({"nova-conf": str(demo.conf)})
    run = juju.run("check")
    run.assert_succeeded()
    assert (run.results["exit-code"], run.results["blockers"]) == ("2", "1")
    assert run.results["findings.00.code"] == "pending-online-migration"
    assert (
        run.results["findings.00.fix"]
        == "juju run nova-cloud-controller/leader online-migrate database=main all-cells=true"
    )
    assert [line for line in run.logs if ": blocker: " in line] == [
        "cell1: blocker: " + run.results["findings.00.summary"]
    ]

    juju.run("online-migrate", {"all-cells": True}).assert_succeeded()
    run = juju.run("check", {"no-placement": True})
    run.assert_succeeded()
    assert (run.results["exit-code"], run.results["blockers"]) == ("1", "0")
    assert run.results["findings.00.severity"] == "warning"
    assert "pending-online-migration" not in run.results.values()


def test_packed_layout_has_what_ops_reads(juju: FakeJuju) -> None:
    """The packed directory is what ops expects: metadata with the name, every action."""
    meta = yaml.safe_load((juju.charm_dir / "metadata.yaml").read_text())
    assert meta["name"] == "nova-cloud-controller"
    assert meta["docs"] == CHARMCRAFT["links"]["documentation"]
    assert meta["website"] == CHARMCRAFT["links"]["website"]
    assert meta["assumes"] == ["juju >= 3.3"]
    assert meta["requires"] == {"shared-db": {"interface": "mysql-shared", "limit": 1}}
    assert "config" not in meta and "parts" not in meta
    actions = yaml.safe_load((juju.charm_dir / "actions.yaml").read_text())
    assert set(actions) == {
        "sync", "version", "online-migrate", "archive", "purge", "null-instance-uuid-scan",
        "check", "placement-audit", "heal-allocations", "sync-aggregates", "rebuild-placement",
        "archive-data", "purge-data", "openstack-upgrade",
    }  # fmt: skip
    assert os.access(juju.charm_dir / "dispatch", os.X_OK)
