"""Credentials over shared-db, as mysql-router gives them, against a real MariaDB.

The unit has nothing but the relation: no nova.conf, no secret.  The remote
unit's data is what mysql-router's shared-db provider writes for the classic
nova-cloud-controller (db_host, db_port, <prefix>_password,
<prefix>_allowed_units); the grants behind it are real, for a user whose
password has the characters a URL must escape.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ops
import pymysql
import pytest
import sqlalchemy as sa
import yaml
from novadb.config import Settings, load_settings
from novadb.connections import engine_for
from novadb.sample.cloud import CloudSpec, populate
from novadb.schema.sync import sync
from ops import testing
from sqlalchemy.engine import URL, make_url

from charm import NovaCloudControllerCharm
from credentials import Requested, SharedDbAnswer, read_shared_db, resolve, shared_db_request
from tests.charm.test_dispatch import FakeJuju

ROOT = Path(__file__).resolve().parents[2]
CHARMCRAFT: dict[str, Any] = yaml.safe_load((ROOT / "charmcraft.yaml").read_text())
ACTIONS: dict[str, Any] = yaml.safe_load((ROOT / "actions.yaml").read_text())
META = {k: CHARMCRAFT[k] for k in ("name", "assumes", "requires")}
PASSWORD = "p@ss:w/rd%&?#1"
PREFIXES = ("nova", "novaapi", "novacell0", "placement")


@dataclass
class RouterCloud:
    """Databases and a user as mysql-router would have made them, and its relation data."""

    name: str
    host: str
    port: int
    settings: Settings
    admin: URL
    data: dict[str, str] = field(default_factory=dict)

    def config(self, **extra: Any) -> dict[str, Any]:
        return {
            "nova-conf": "/nonexistent/nova.conf",
            "database": self.name,
            "database-user": self.name,
            "placement-database": f"{self.name}_placement",
            **extra,
        }

    def answer(self, allowed: str) -> dict[str, str]:
        out = {"db_host": self.host, "db_port": str(self.port)}
        for prefix in PREFIXES:
            out[f"{prefix}_password"] = PASSWORD
            out[f"{prefix}_allowed_units"] = allowed
        return out

    def count(self, sql: str) -> int:
        with engine_for(self.settings.url("main")) as engine, engine.connect() as conn:
            return int(conn.execute(sa.text(sql)).scalar_one())


def _admin(url: URL) -> pymysql.connections.Connection:
    return pymysql.connect(
        host=url.host or "127.0.0.1",
        port=url.port or 3306,
        user=url.username or "root",
        password=url.password or "",
        autocommit=True,
    )


@pytest.fixture
def router(mysql_url_base: str) -> Iterator[RouterCloud]:
    base = make_url(mysql_url_base)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    name = f"ncc_{worker}_{secrets.token_hex(4)}"
    databases = [name, f"{name}_api", f"{name}_cell0", f"{name}_placement"]
    conn = _admin(base)
    try:
        with conn.cursor() as cur:
            for db in databases:
                cur.execute(f"CREATE DATABASE `{db}` CHARACTER SET utf8mb4")
            for host in ("%", "localhost", "127.0.0.1"):
                cur.execute("CREATE USER %s@%s IDENTIFIED BY %s", (name, host, PASSWORD))
                for db in databases:
                    cur.execute(f"GRANT ALL ON `{db}`.* TO %s@%s", (name, host))

        def url(db: str) -> str:
            return URL.create(
                "mysql+pymysql",
                username=name,
                password=PASSWORD,
                host=base.host or "127.0.0.1",
                port=base.port or 3306,
                database=db,
            ).render_as_string(hide_password=False)

        settings = load_settings(
            database=url(name), api_database=url(f"{name}_api"),
            placement_database=url(f"{name}_placement"),
        )  # fmt: skip
        sync(settings)
        with engine_for(settings.url("main")) as main, engine_for(settings.url("api")) as api:
            populate(main, api, CloudSpec(instances=40, seed=9))
        yield RouterCloud(name, base.host or "127.0.0.1", base.port or 3306, settings, base)
    finally:
        with conn.cursor() as cur:
            for db in databases:
                cur.execute(f"DROP DATABASE IF EXISTS `{db}`")
            for host in ("%", "localhost", "127.0.0.1"):
                cur.execute("DROP USER IF EXISTS %s@%s", (name, host))
        conn.close()


def context() -> testing.Context[NovaCloudControllerCharm]:
    return testing.Context(
        NovaCloudControllerCharm, meta=META, actions=ACTIONS, config=CHARMCRAFT["config"]
    )


def shared_db(data: dict[str, str]) -> testing.Relation:
    return testing.Relation(
        "shared-db", interface="mysql-shared", remote_app_name="mysql-router",
        remote_units_data={0: data},
    )  # fmt: skip


def assert_no_password(ctx: testing.Context[NovaCloudControllerCharm], out: testing.State) -> None:
    shown = [
        *(f"{k}={v}" for k, v in (ctx.action_results or {}).items()),
        *ctx.action_logs,
        *(line.message for line in ctx.juju_log),
        out.unit_status.message,
        *(s.message for s in ctx.unit_status_history),
    ]
    assert not [text for text in shown if "w/rd" in text or "p%40ss" in text]


# -- the protocol, without a database ---------------------------------------------------------


def test_the_unit_asks_for_the_classic_prefixes() -> None:
    assert shared_db_request("10.5.0.21", Requested()) == {
        "nova_database": "nova", "nova_username": "nova", "nova_hostname": "10.5.0.21",
        "novaapi_database": "nova_api", "novaapi_username": "nova",
        "novaapi_hostname": "10.5.0.21",
        "novacell0_database": "nova_cell0", "novacell0_username": "nova",
        "novacell0_hostname": "10.5.0.21",
        "placement_database": "placement", "placement_username": "nova",
        "placement_hostname": "10.5.0.21",
    }  # fmt: skip
    without = shared_db_request("10.5.0.21", Requested(placement_database=""))
    assert not [k for k in without if k.startswith("placement_")]


def test_an_answer_counts_only_once_this_unit_is_allowed_everywhere() -> None:
    answer = {"db_host": "127.0.0.1", "db_port": "3306"}
    for prefix in PREFIXES:
        answer[f"{prefix}_password"] = "pw"
        answer[f"{prefix}_allowed_units"] = "nova-cloud-controller/1"
    mine = read_shared_db([answer], "nova-cloud-controller/0", Requested())
    assert mine == SharedDbAnswer(
        None,
        "shared-db: waiting for access to nova, novaapi, novacell0, placement for "
        "nova-cloud-controller/0",
    )
    answer["nova_allowed_units"] = "nova-cloud-controller/1 nova-cloud-controller/0"
    partly = read_shared_db([answer], "nova-cloud-controller/0", Requested())
    assert partly.waiting is not None and "novaapi, novacell0, placement" in partly.waiting
    nothing = read_shared_db([{}], "nova-cloud-controller/0", Requested())
    assert nothing.waiting == "shared-db: waiting for the database host"


def test_urls_escape_the_password_and_name_the_port() -> None:
    answer = {"db_host": "127.0.0.1", "db_port": "3307"}
    for prefix in PREFIXES[:3]:
        answer[f"{prefix}_password"] = PASSWORD
        answer[f"{prefix}_allowed_units"] = "u/0"
    got = read_shared_db([answer], "u/0", Requested(placement_database=""))
    assert got.urls is not None
    main = make_url(str(got.urls["database"]))
    assert (main.password, main.host, main.port, main.database) == (
        PASSWORD, "127.0.0.1", 3307, "nova",
    )  # fmt: skip
    assert make_url(str(got.urls["api_database"])).database == "nova_api"
    assert got.urls["placement_database"] is None
    # Without a placement prefix, Placement falls back to the API database as in nova.conf.
    settings = resolve(got, None, "/nonexistent").settings
    assert (settings.placement, settings.placement_is_api) == (got.urls["api_database"], True)


def test_precedence_relation_then_secret_then_nova_conf(tmp_path: Path) -> None:
    conf = tmp_path / "nova.conf"
    conf.write_text(
        "[database]\nconnection = sqlite:///c\n[api_database]\nconnection = sqlite:///a\n"
    )
    relation = SharedDbAnswer({"database": "sqlite:///r", "api_database": "sqlite:///ra",
                               "placement_database": None}, None)  # fmt: skip
    secret = {"connection": "sqlite:///s", "api-connection": "sqlite:///sa"}
    assert resolve(relation, secret, str(conf)).source == "shared-db"
    assert resolve(relation, secret, str(conf)).settings.main == "sqlite:///r"
    waiting = SharedDbAnswer(None, "shared-db: waiting for the database host")
    assert resolve(waiting, secret, str(conf)).source == "database-secret"
    assert resolve(waiting, None, str(conf)).source == "nova.conf"
    assert resolve(waiting, None, str(conf)).settings.main == "sqlite:///c"


# -- ops.testing, against MariaDB -------------------------------------------------------------


def test_a_unit_not_yet_allowed_waits_and_its_actions_say_why(router: RouterCloud) -> None:
    ctx = context()
    state = testing.State(
        config=router.config(), relations={shared_db(router.answer("nova-cloud-controller/1"))}
    )
    out = ctx.run(ctx.on.update_status(), state)
    waiting = (
        "shared-db: waiting for access to nova, novaapi, novacell0, placement for "
        "nova-cloud-controller/0"
    )
    assert out.unit_status == ops.WaitingStatus(waiting)
    with pytest.raises(testing.ActionFailed) as failed:
        ctx.run(ctx.on.action("version"), state)
    assert failed.value.message == waiting


def test_only_the_relation_runs_version_archive_data_and_purge_data(router: RouterCloud) -> None:
    ctx = context()
    allowed = "nova-cloud-controller/0 nova-cloud-controller/1"
    state = testing.State(config=router.config(), relations={shared_db(router.answer(allowed))})
    deleted = router.count("SELECT count(*) FROM instances WHERE deleted != 0")
    assert deleted > 0

    out = ctx.run(ctx.on.action("version"), state)
    assert ctx.action_results is not None and ctx.action_results["pending"] == "0"
    assert out.unit_status == ops.ActiveStatus(
        "schema at head; matches installed 2026.2 (hibiscus); credentials: shared-db"
    )
    assert_no_password(ctx, out)

    out = ctx.run(ctx.on.action("archive-data", params={"batch-size": 1000}), out)
    assert ctx.action_results is not None
    assert "Nothing was archived" in ctx.action_results["archive-deleted-rows"]
    assert int(ctx.action_results["rows.instances"]) == deleted
    assert router.count("SELECT count(*) FROM instances WHERE deleted != 0") == 0
    assert_no_password(ctx, out)

    out = ctx.run(ctx.on.action("purge-data"), out)
    assert ctx.action_results is not None
    assert "DB: Deleted" in ctx.action_results["output"]  # nova-manage purge --verbose lines
    assert router.count("SELECT count(*) FROM shadow_instances") == 0
    assert_no_password(ctx, out)


def test_joining_asks_for_the_databases_from_the_units_address(router: RouterCloud) -> None:
    ctx = context()
    relation = shared_db({})
    out = ctx.run(
        ctx.on.relation_joined(relation),
        testing.State(config=router.config(), relations={relation}),
    )
    local = out.get_relation(relation.id).local_unit_data
    address = "192.0.2.0"  # ops.testing's default binding address
    assert {
        k: v for k, v in local.items() if not k.startswith("egress") and "address" not in k
    } == {
        **shared_db_request(
            address, Requested(router.name, router.name, f"{router.name}_placement")
        ),
    }


# -- ./dispatch, against MariaDB ---------------------------------------------------------------


def test_dispatch_with_only_the_relation(router: RouterCloud, tmp_path: Path) -> None:
    juju = FakeJuju(tmp_path)
    juju.config.update(router.config())
    data = router.answer("nova-cloud-controller/1")
    juju.relations["shared-db"] = {
        "id": 7, "app": "mysql-router", "units": {"mysql-router/0": data}, "app_data": {},
        "local": {},
    }  # fmt: skip

    run = juju.run("version")
    run.assert_succeeded()
    assert run.results["pending"] == "0"
    assert run.statuses == [
        ("active", "schema at head; matches installed 2026.2 (hibiscus); credentials: shared-db")
    ]
    run = juju.run("archive-data", {"batch-size": 1000})
    run.assert_succeeded()
    assert "Nothing was archived" in run.results["archive-deleted-rows"]
    run = juju.run("purge-data")
    run.assert_succeeded()
    assert "DB: Deleted" in run.results["output"]
    for call in juju_calls(run):
        assert "w/rd" not in call

    # Access withdrawn (a unit not in allowed_units): the unit waits, actions fail saying so.
    data["nova_allowed_units"] = "nova-cloud-controller/0"
    run = juju.run("version")
    assert run.failures == ["shared-db: waiting for access to nova for nova-cloud-controller/1"]
    assert run.statuses == [
        ("waiting", "shared-db: waiting for access to nova for nova-cloud-controller/1")
    ]


def juju_calls(run: Any) -> list[str]:
    return [" ".join([c.tool, *c.argv, c.stdin]) for c in run.calls]
