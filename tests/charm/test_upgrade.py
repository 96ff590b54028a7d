"""The upgrade as COU and operators drive it: openstack-origin moves up, the databases follow.

A cloud at 2024.1 (caracal, nova-common 29.x on noble's own archive) whose
operator sets ``openstack-origin`` to ``cloud:noble-epoxy`` (2025.1).  The apt
boundary is faked (tests/charm/fake_packages.py): installing from an origin
gives the Nova version of its release.  Everything else is real: the
databases on SQLite, sync, online-migrate, the unit's status.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ops
import pytest
import sqlalchemy as sa
import yaml
from novadb.config import Settings, load_settings
from novadb.connections import engine_for
from novadb.sample.cloud import CloudSpec, populate
from novadb.schema import revisions
from novadb.schema.sync import sync
from ops import testing
from sqlalchemy.exc import OperationalError

from charm import NovaCloudControllerCharm
from tests.charm.fake_packages import FakePackages

ROOT = Path(__file__).resolve().parents[2]
CHARMCRAFT: dict[str, Any] = yaml.safe_load((ROOT / "charmcraft.yaml").read_text())
ACTIONS: dict[str, Any] = yaml.safe_load((ROOT / "actions.yaml").read_text())
META = {k: CHARMCRAFT[k] for k in ("name", "assumes", "requires")}
CONF = "credentials: nova.conf"
EPOXY = "cloud:noble-epoxy"
# The last main revision each release shipped.
MAIN_AT = {"2024.1": "13863f4e1612", "2025.1": "2903cd72dc14"}
RESUME = "fix it, then run: juju run nova-cloud-controller/leader openstack-upgrade"


def context() -> testing.Context[NovaCloudControllerCharm]:
    return testing.Context(
        NovaCloudControllerCharm, meta=META, actions=ACTIONS, config=CHARMCRAFT["config"]
    )


@dataclass(frozen=True)
class Caracal:
    """Databases at 2024.1 with instances whose compute_id an online migration must fill."""

    settings: Settings
    conf: Path

    def revision(self, db: str) -> str | None:
        with engine_for(self.settings.url(db)) as engine, engine.connect() as conn:
            return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()

    def scalar(self, sql: str) -> int:
        with engine_for(self.settings.url("main")) as engine, engine.connect() as conn:
            return int(conn.execute(sa.text(sql)).scalar_one())

    def execute(self, sql: str) -> None:
        with engine_for(self.settings.url("main")) as engine, engine.begin() as conn:
            conn.execute(sa.text(sql))

    def state(self, *, leader: bool, **config: Any) -> testing.State:
        return testing.State(leader=leader, config={"nova-conf": str(self.conf), **config})


@pytest.fixture
def caracal(tmp_path: Path, packages: FakePackages) -> Caracal:
    urls = {db: f"sqlite:///{tmp_path / f'{db}.sqlite'}" for db in ("main", "api", "placement")}
    settings = load_settings(
        database=urls["main"], api_database=urls["api"], placement_database=urls["placement"]
    )
    sync(settings, release="2024.1")
    with engine_for(urls["main"]) as main, engine_for(urls["api"]) as api:
        populate(main, api, CloudSpec(instances=30, seed=5))
    conf = tmp_path / "nova.conf"
    conf.write_text(
        f"[database]\nconnection = {urls['main']}\n\n[api_database]\nconnection = {urls['api']}"
        f"\n\n[placement_database]\nconnection = {urls['placement']}\n"
    )
    cloud = Caracal(settings, conf)
    # Instances from before Bobcat: online-migrate fills compute_id from their node.
    cloud.execute("UPDATE instances SET compute_id = NULL WHERE deleted = 0 AND id % 3 = 0")
    assert cloud.scalar("SELECT count(*) FROM instances WHERE compute_id IS NULL") > 0
    packages.version = "29.2.0"
    return cloud


def test_leader_upgrades_the_package_then_the_databases(
    caracal: Caracal, packages: FakePackages
) -> None:
    ctx = context()
    out = ctx.run(
        ctx.on.config_changed(), caracal.state(leader=True, **{"openstack-origin": EPOXY})
    )

    assert packages.installs == [EPOXY]
    assert caracal.revision("main") == MAIN_AT["2025.1"]
    assert caracal.revision("api") == revisions.head("api")
    assert caracal.revision("placement") == revisions.head("placement")
    assert caracal.scalar("SELECT count(*) FROM instances WHERE compute_id IS NULL") == 0
    assert out.workload_version == "31.0.0"
    assert out.unit_status == ops.ActiveStatus(
        f"1 schema revision pending; matches installed 2025.1 (epoxy); {CONF}"
    )
    history = [s.message for s in ctx.unit_status_history][1:]  # after the initial unknown
    assert history[:2] == [
        f"installing nova-common from {EPOXY}",
        "checking the schema against 2025.1 (epoxy)",
    ]
    # main had two revisions to apply; the status counted them.
    assert [m for m in history if m.startswith("syncing main")] == [
        "syncing main (0/2)",
        "syncing main (1/2)",
        "syncing main (2/2)",
    ]
    assert history[-1] == "running online migrations for 2025.1 (epoxy)"

    # The next hooks find nothing to do: no second install, no second migration.
    again = ctx.run(ctx.on.update_status(), out)
    assert packages.installs == [EPOXY]
    assert again.unit_status == out.unit_status


def test_a_unit_that_is_not_the_leader_upgrades_its_package_and_waits(
    caracal: Caracal, packages: FakePackages
) -> None:
    ctx = context()
    state = caracal.state(leader=False, **{"openstack-origin": EPOXY})
    out = ctx.run(ctx.on.config_changed(), state)

    assert packages.installs == [EPOXY]
    assert out.workload_version == "31.0.0"
    assert caracal.revision("main") == MAIN_AT["2024.1"]
    assert caracal.scalar("SELECT count(*) FROM instances WHERE compute_id IS NULL") > 0
    assert out.unit_status == ops.WaitingStatus(
        "3 schema revisions pending; behind installed 2025.1 (epoxy): waiting for the leader "
        f"to migrate; {CONF}"
    )


def test_a_failing_sync_blocks_with_the_fix_and_the_action_resumes(
    caracal: Caracal, packages: FakePackages
) -> None:
    # A hand-made hotfix: the column 2025.1's last main revision adds is already there.
    caracal.execute("ALTER TABLE console_auth_tokens ADD COLUMN tls_port INTEGER")
    ctx = context()
    out = ctx.run(
        ctx.on.config_changed(), caracal.state(leader=True, **{"openstack-origin": EPOXY})
    )

    assert packages.installs == [EPOXY]
    assert isinstance(out.unit_status, ops.BlockedStatus)
    message = out.unit_status.message
    assert message.startswith("upgrade to 2025.1 (epoxy) failed in sync: ")
    assert "duplicate column name: tls_port" in message
    assert message.endswith(RESUME)
    assert caracal.revision("main") == "d60bddf7a903"  # the revision before the failing one
    # update-status does not retry on its own.
    again = ctx.run(ctx.on.update_status(), out)
    assert again.unit_status == out.unit_status

    # The operator removes the hotfix and resumes.
    caracal.execute("ALTER TABLE console_auth_tokens DROP COLUMN tls_port")
    done = ctx.run(ctx.on.action("openstack-upgrade"), again)
    assert ctx.action_results == {
        "version.before": "31.0.0",
        "version.after": "31.0.0",
        "release": "2025.1 (epoxy)",
        "leader": "true",
        "databases": "migrated to 2025.1 (epoxy)",
    }
    assert packages.installs == [EPOXY]
    assert caracal.revision("main") == MAIN_AT["2025.1"]
    assert caracal.scalar("SELECT count(*) FROM instances WHERE compute_id IS NULL") == 0
    assert done.unit_status == ops.ActiveStatus(
        f"1 schema revision pending; matches installed 2025.1 (epoxy); {CONF}"
    )


def test_going_back_a_release_is_refused(caracal: Caracal, packages: FakePackages) -> None:
    packages.version = "31.0.0"
    ctx = context()
    out = ctx.run(
        ctx.on.config_changed(), caracal.state(leader=True, **{"openstack-origin": "distro"})
    )
    assert packages.installs == []
    assert out.unit_status == ops.BlockedStatus(
        "openstack-origin distro (2024.1 (caracal)) is older than the installed nova-common "
        "31.0.0 (2025.1 (epoxy)): going back a release is not supported; set openstack-origin "
        "to that release or a newer one"
    )
    assert caracal.revision("main") == MAIN_AT["2024.1"]


def test_a_schema_ahead_of_the_new_release_is_never_migrated_down(
    caracal: Caracal, packages: FakePackages
) -> None:
    sync(caracal.settings)  # someone synced to head (2026.2) with a newer novadb
    ctx = context()
    out = ctx.run(
        ctx.on.config_changed(), caracal.state(leader=True, **{"openstack-origin": EPOXY})
    )
    assert packages.installs == [EPOXY]
    assert caracal.revision("main") == revisions.head("main")
    assert out.unit_status == ops.BlockedStatus(
        "upgrade to 2025.1 (epoxy) refused: the schema of main is ahead of it (never migrated "
        "down); set openstack-origin to the release the schema is at"
    )


def test_action_managed_upgrade_waits_for_the_action(
    caracal: Caracal, packages: FakePackages
) -> None:
    ctx = context()
    config = {"openstack-origin": EPOXY, "action-managed-upgrade": True}
    out = ctx.run(ctx.on.config_changed(), caracal.state(leader=True, **config))
    assert packages.installs == []
    assert out.workload_version == "29.2.0"
    assert caracal.revision("main") == MAIN_AT["2024.1"]
    assert out.unit_status == ops.ActiveStatus(
        f"3 schema revisions pending; matches installed 2024.1 (caracal); {CONF}"
    )

    done = ctx.run(ctx.on.action("openstack-upgrade"), out)
    assert ctx.action_results is not None
    assert (ctx.action_results["version.before"], ctx.action_results["version.after"]) == (
        "29.2.0",
        "31.0.0",
    )
    assert packages.installs == [EPOXY]
    assert caracal.revision("main") == MAIN_AT["2025.1"]
    assert done.workload_version == "31.0.0"


def test_a_package_that_will_not_install_blocks_with_what_to_do(
    caracal: Caracal, packages: FakePackages
) -> None:
    packages.fail_install = (
        "installing nova-common from cloud:noble-epoxy failed: E: Unable to locate package; "
        "check the unit's apt sources and network, then run the openstack-upgrade action"
    )
    ctx = context()
    out = ctx.run(
        ctx.on.config_changed(), caracal.state(leader=True, **{"openstack-origin": EPOXY})
    )
    assert out.unit_status == ops.BlockedStatus(packages.fail_install)
    assert caracal.revision("main") == MAIN_AT["2024.1"]
    assert dataclasses.replace(out).workload_version == "29.2.0"


def test_a_database_error_while_reading_the_schema_blocks_with_one_line(
    caracal: Caracal, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server answers the probe, then refuses the schema inspection: a raw
    # DBAPIError, which must neither put the unit in error nor show SQL.
    import charm

    def refused(*_args: object, **_kwargs: object) -> None:
        raise OperationalError(
            "SELECT version_num FROM alembic_version",
            {},
            Exception(
                1142, "SELECT command denied to user 'nova'@'%' for table 'alembic_version'"
            ),
        )

    monkeypatch.setattr(charm, "version", refused)
    ctx = context()
    out = ctx.run(ctx.on.update_status(), caracal.state(leader=True))
    assert out.unit_status == ops.BlockedStatus(
        "cannot read the schema: (1142) SELECT command denied to user 'nova'@'%' for table "
        f"'alembic_version'; {CONF}"
    )
