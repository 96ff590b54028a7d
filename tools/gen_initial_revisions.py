"""Generate the initial Alembic revisions from the Nova 34 reference schemas.

Why a generator: the initial revisions of Nova (main, 8f2f1571d55b), the API DB
(d67eeaabee36) and Placement (b4ed3a175331) create about 150 tables whose exact
shape (types per dialect, index and constraint names, charsets) is a fact we must
match, not a design.  Typing them by hand invites drift; this tool reads the two
reference snapshots of each database (MariaDB and SQLite, in tests/reference/),
works the head schema back to the initial revision with the edits listed in
``REWIND`` (what the later revisions change, read from Nova's and Placement's
revision notes), and writes readable ``op.create_table`` code.  The parity test
then proves the chain of revisions ends exactly at the reference.

Run from the repository root:  python tools/gen_initial_revisions.py
The output is committed; rerun only if the reference changes.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
REF = ROOT / "tests" / "reference"

Spec = dict[str, Any]

# --- what later revisions change, undone to get the initial schema ---------------


def _rewind_main(m: Spec, s: Spec) -> None:
    for snap in (m, s):
        t = snap["tables"]
        for name in ("instances", "shadow_instances"):
            _drop_col(t[name], "compute_id")
        t["instances"]["indexes"].pop("instances_compute_id_deleted_idx")
        for name in ("migrations", "shadow_migrations"):
            _drop_col(t[name], "dest_compute_id")
        for idx in (
            "migrations_dest_compute_id_deleted_idx",
            "migrations_by_dest_host_nodes_and_status_idx",
            "migrations_by_src_host_nodes_and_status_idx",
        ):
            t["migrations"]["indexes"].pop(idx)
        for name in ("block_device_mapping", "shadow_block_device_mapping"):
            for col in (
                "encrypted",
                "encryption_secret_uuid",
                "encryption_format",
                "encryption_options",
            ):
                _drop_col(t[name], col)
        _drop_col(t["console_auth_tokens"], "tls_port")
        t["console_auth_tokens"]["indexes"]["console_auth_tokens_token_hash_idx"] = {
            "columns": ["token_hash"],
            "unique": False,
        }
        t["instances"]["indexes"]["uuid"] = {"columns": ["uuid"], "unique": True}
        t["shadow_instance_extra"]["indexes"]["shadow_instance_extra_idx"] = {
            "columns": ["instance_uuid"],
            "unique": False,
        }
        t["shadow_migrations"]["indexes"]["shadow_migrations_uuid"] = {
            "columns": ["uuid"],
            "unique": True,
        }
        for col in t["shadow_volume_usage_cache"]["columns"]:
            if col[0] == "user_id":
                col[1] = "VARCHAR(36)"
        del t["share_mapping"]
    # MySQL: the shadow of instance_type_extra_specs only became utf8_bin later.
    m["tables"]["shadow_instance_type_extra_specs"]["options"] = {
        "mysql_collate": "utf8mb3_general_ci",
        "mysql_default charset": "utf8mb3",
    }
    # A MySQL unique index is also reported as a unique constraint.
    m["tables"]["instances"]["indexes"]["uuid"] = {"columns": ["uuid"], "unique": True}
    m["tables"]["shadow_migrations"]["indexes"]["shadow_migrations_uuid"] = {
        "columns": ["uuid"],
        "unique": True,
    }


_BUILD_REQUEST_COLUMNS = [
    # (name, mysql type, sqlite type, nullable) in Nova's original order,
    # inserted after "id"; dropped by b30f573d3377.
    ("request_spec_id", "INTEGER(11)", "INTEGER", True),
    ("project_id", None, None, None),
    ("user_id", "VARCHAR(255)", "VARCHAR(255)", True),
    ("display_name", "VARCHAR(255)", "VARCHAR(255)", True),
    ("instance_metadata", "TEXT", "TEXT", True),
    ("progress", "INTEGER(11)", "INTEGER", True),
    ("vm_state", "VARCHAR(255)", "VARCHAR(255)", True),
    ("task_state", "VARCHAR(255)", "VARCHAR(255)", True),
    ("image_ref", "VARCHAR(255)", "VARCHAR(255)", True),
    ("access_ip_v4", "VARCHAR(39)", "VARCHAR(39)", True),
    ("access_ip_v6", "VARCHAR(39)", "VARCHAR(39)", True),
    ("info_cache", "TEXT", "TEXT", True),
    ("security_groups", "TEXT", "TEXT", True),
    ("config_drive", "TINYINT(1)", "BOOLEAN", True),
    ("key_name", "VARCHAR(255)", "VARCHAR(255)", True),
    ("locked_by", "ENUM('owner','admin')", "VARCHAR(5)", True),
]


def _rewind_api(m: Spec, s: Spec) -> None:
    for snap, dialect in ((m, "mysql"), (s, "sqlite")):
        table = snap["tables"]["build_requests"]
        old = {c[0]: c for c in table["columns"]}
        cols = [old["created_at"], old["updated_at"], old["id"]]
        for name, mtype, stype, nullable in _BUILD_REQUEST_COLUMNS:
            if mtype is None:
                cols.append(old[name])
            else:
                cols.append([name, mtype if dialect == "mysql" else stype, nullable, None])
        cols += [old[n] for n in ("instance_uuid", "instance", "block_device_mappings", "tags")]
        assert len(old) == 8, sorted(old)
        table["columns"] = cols


def _rewind_placement(m: Spec, s: Spec) -> None:
    for snap in (m, s):
        t = snap["tables"]
        del t["consumer_types"]
        _drop_col(t["consumers"], "consumer_type_id")
        t["consumers"]["indexes"].pop("consumers_consumer_type_id_idx")
        t["consumers"]["fks"] = []
        t["inventories"]["indexes"]["inventories_resource_provider_id_idx"] = {
            "columns": ["resource_provider_id"],
            "unique": False,
        }
        t["inventories"]["indexes"]["inventories_resource_provider_resource_class_idx"] = {
            "columns": ["resource_provider_id", "resource_class_id"],
            "unique": False,
        }
        t["placement_aggregates"]["indexes"]["ix_placement_aggregates_uuid"] = {
            "columns": ["uuid"],
            "unique": False,
        }
        t["resource_providers"]["indexes"]["resource_providers_name_idx"] = {
            "columns": ["name"],
            "unique": False,
        }
        t["resource_providers"]["indexes"]["resource_providers_uuid_idx"] = {
            "columns": ["uuid"],
            "unique": False,
        }


# MySQL index prefix lengths (the JSON snapshots do not record them; read from
# the reference DDL: the only prefixed index in Nova 34's schemas).
PREFIX_LENGTHS = {
    ("migrations", "migrations_by_host_nodes_and_status_idx"): {
        "source_compute": 100,
        "dest_compute": 100,
        "source_node": 100,
        "dest_node": 100,
    },
}

REWIND = {"main": _rewind_main, "api": _rewind_api, "placement": _rewind_placement}

TARGETS = {
    "main": ("8f2f1571d55b", "initial_version", "Initial version", "2021-04-13"),
    "api": ("d67eeaabee36", "initial_version", "Initial version", "2021-04-13"),
    "placement": ("b4ed3a175331", "initial", "Initial", "2019-02-21"),
}


def _drop_col(table: Spec, name: str) -> None:
    before = len(table["columns"])
    table["columns"] = [c for c in table["columns"] if c[0] != name]
    assert len(table["columns"]) == before - 1, (name, table)


# --- rendering ---------------------------------------------------------------------

_CHARSET = {"utf8mb3": "utf8", "latin1": "latin1", "utf8mb4": None}


def _type(mtype: str, stype: str) -> str:
    if mtype == "DATETIME":
        return "sa.DateTime()"
    if mtype == "INTEGER(11)":
        return "sa.Integer()"
    if mtype == "BIGINT(20)":
        return "sa.BigInteger()" if stype == "BIGINT" else "BigIntegerPK()"
    if mtype == "FLOAT":
        return "sa.Float()"
    if mtype == "TEXT":
        return "sa.Text()"
    if mtype == "MEDIUMTEXT":
        return "MediumText()"
    if mtype == "TINYINT(1)":
        return "sa.Boolean()"
    enum = re.fullmatch(r"ENUM\((.*)\)", mtype)
    if enum:
        values = re.findall(r"'([^']*)'", enum.group(1))
        assert stype == f"VARCHAR({max(map(len, values))})", (mtype, stype)
        return "sa.Enum(" + ", ".join(repr(v) for v in values) + ")"
    varchar = re.fullmatch(r"VARCHAR\((\d+)\)(?: CHARACTER SET (\w+) COLLATE (\w+))?", mtype)
    if varchar:
        n, charset, collation = varchar.groups()
        assert stype == f"VARCHAR({n})", (mtype, stype)
        if charset is None:
            return f"sa.String({n})"
        kind = "bin" if collation.endswith("_bin") else "ci"
        return f"MySQLString({n}, binary={kind == 'bin'})"
    raise ValueError(f"unmapped type pair {mtype!r} / {stype!r}")


def _default(value: str | None) -> str | None:
    if value is None:
        return None
    if value.startswith("'"):
        return repr(value.strip("'"))
    return f"sa.text({value!r})"


def _order(tables: dict[str, Spec]) -> list[str]:
    """Parents before children, otherwise alphabetical; shadows last."""
    names = sorted(tables, key=lambda n: (n.startswith("shadow_"), n))
    done: list[str] = []

    def visit(name: str, stack: tuple[str, ...] = ()) -> None:
        if name in done or name in stack:
            return
        for fk in tables[name]["fks"]:
            if fk[2] != name:
                visit(fk[2], stack + (name,))
        done.append(name)

    for name in names:
        visit(name)
    return done


def _fk_auto_index(fk_name: str | None, cols: list[str]) -> str:
    """The index InnoDB creates for a foreign key that no index covers."""
    return fk_name if fk_name else cols[0]


def render_table(name: str, m: Spec, s: Spec) -> tuple[str, list[str]]:
    """Return the op.create_table call and any MySQL-only statements after it."""
    lines = ["    op.create_table(", f"        {name!r},"]
    pk = s["pk"]
    assert pk == m["pk"], name
    mcols = {c[0]: c for c in m["columns"]}
    for cname, stype, nullable, sdefault in s["columns"]:
        mc = mcols[cname]
        assert mc[2] == nullable, (name, cname)
        args = [repr(cname), _type(mc[1], stype)]
        if cname in pk:
            args.append("primary_key=True")
            if len(pk) > 1 or not mc[1].startswith(("INTEGER", "BIGINT")):
                args.append("autoincrement=False")
        args.append(f"nullable={nullable}")
        default = _default(mc[3])
        assert (default is None) == (sdefault is None), (name, cname)
        if default is not None:
            args.append(f"server_default={default}")
        lines.append(f"        sa.Column({', '.join(args)}),")

    # Foreign keys: named ones keep their name; unnamed ones are listed in the
    # order InnoDB numbered them (<table>_ibfk_N), so the numbers come out the same.
    mfks = sorted(m["fks"], key=lambda f: f[0])
    sfk_names = {tuple(f[1]): f[0] for f in s["fks"]}
    auto_indexes = set()
    for fk_name, cols, ref_table, ref_cols in mfks:
        sname = sfk_names.get(tuple(cols), "missing")
        assert sname != "missing", (name, cols)
        named = sname is not None  # Nova names some FKs "<table>_ibfk_1" itself
        assert named or fk_name.startswith(f"{name}_ibfk_"), (name, fk_name)
        refs = [f"{ref_table}.{c}" for c in ref_cols]
        extra = f", name={fk_name!r}" if named else ""
        lines.append(f"        sa.ForeignKeyConstraint({cols!r}, {refs!r}{extra}),")
        auto_indexes.add(_fk_auto_index(fk_name if named else None, cols))

    for uname, ucols in sorted(s["uniques"].items()):
        lines.append(
            f"        sa.UniqueConstraint({', '.join(map(repr, ucols))}, name={uname!r}),"
        )
    for iname, idx in sorted(s["indexes"].items()):
        unique = ", unique=True" if idx["unique"] else ""
        lengths = PREFIX_LENGTHS.get((name, iname))
        if lengths:
            unique += f", mysql_length={lengths!r}"
        lines.append(
            f"        sa.Index({iname!r}, {', '.join(map(repr, idx['columns']))}{unique}),"
        )

    opts = m["options"]
    charset = _CHARSET[opts["mysql_default charset"]]
    lines.append("        mysql_engine='InnoDB',")
    if charset:
        lines.append(f"        mysql_charset={charset!r},")
        if opts["mysql_collate"].endswith("_bin"):
            lines.append("        mysql_collate='utf8_bin',")
    lines.append("    )")

    # Indexes only MySQL has: not a unique constraint, not an index SQLite has too,
    # and not the one InnoDB makes by itself for a foreign key.
    known = set(s["indexes"]) | set(s["uniques"]) | auto_indexes
    mysql_only = []
    for iname, idx in sorted(m["indexes"].items()):
        if iname in known:
            continue
        if iname in m["uniques"]:
            raise ValueError(f"{name}.{iname}: unique only on MySQL")
        mysql_only.append(f"        op.create_index({iname!r}, {name!r}, {idx['columns']!r})")
    return "\n".join(lines), mysql_only


HEADER = '''"""{title}

Revision ID: {rev}
Revises:
Create Date: {date}

Generated by tools/gen_initial_revisions.py from the Nova 34 / Placement 16
reference schemas, worked back to this revision.  Do not edit by hand.
"""

from alembic import op
import sqlalchemy as sa

from novadb.schema.revision_helpers import database_name, dialect_name
from novadb.schema.column_types import BigIntegerPK, MediumText, MySQLString

revision = {rev!r}
down_revision = None
branch_labels = None
depends_on = None
'''


def generate(db: str) -> str:
    m = json.loads((REF / f"{db}.mysql.json").read_text())
    s = json.loads((REF / f"{db}.sqlite.json").read_text())
    m, s = copy.deepcopy(m), copy.deepcopy(s)
    REWIND[db](m, s)
    rev, slug, title, date = TARGETS[db]
    tables = {k: v for k, v in s["tables"].items() if k != "alembic_version"}
    order = _order(tables)
    base = [t for t in order if not t.startswith("shadow_")]
    shadows = [t for t in order if t.startswith("shadow_")]
    out = [HEADER.format(title=title, rev=rev, date=date)]

    def emit(names: list[str], func: str, doc: str) -> None:
        out.append(f'\ndef {func}() -> None:\n    """{doc}"""')
        mysql_lines: list[str] = []
        for t in names:
            code, extra = render_table(t, m["tables"][t], s["tables"][t])
            out.append(code)
            mysql_lines += extra
        if mysql_lines:
            out.append("    if dialect_name() == 'mysql':")
            out.extend(mysql_lines)

    emit(base, "_create_tables", "Create the live tables.")
    if shadows:
        emit(shadows, "_create_shadow_tables", "Create the shadow tables archive moves rows into.")
    out.append(_UPGRADE[db])
    return "\n".join(out) + "\n"


_UPGRADE = {
    "main": '''
def upgrade() -> None:
    """Create every table of the Nova cell database as of Xena."""
    _create_tables()
    if dialect_name() == "mysql":
        # Nova switches the database default to utf8 before it creates the
        # shadow tables, so they and every later table inherit it.
        name = op.get_context().impl.dialect.identifier_preparer.quote(database_name())
        op.execute(f"ALTER DATABASE {name} DEFAULT CHARACTER SET utf8")
    _create_shadow_tables()


def downgrade() -> None:
    """Nova has no downgrades; neither do we."""
    raise NotImplementedError("downgrade is not supported")
''',
    "api": '''
def upgrade() -> None:
    """Create every table of the Nova API database as of Xena."""
    _create_tables()


def downgrade() -> None:
    """Nova has no downgrades; neither do we."""
    raise NotImplementedError("downgrade is not supported")
''',
    "placement": '''
def upgrade() -> None:
    """Create every table of the Placement database as of Stein."""
    _create_tables()


def downgrade() -> None:
    """Placement has no downgrades; neither do we."""
    raise NotImplementedError("downgrade is not supported")
''',
}


def main() -> None:
    for db, (rev, slug, _title, _date) in TARGETS.items():
        path = ROOT / "migrations" / db / "versions" / f"{rev}_{slug}.py"
        path.write_text(generate(db))
        print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
