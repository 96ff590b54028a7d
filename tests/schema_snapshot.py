# Copied from the project's shared/tools/schema_snapshot.py so the parity test does not
# depend on ../shared in CI.  Keep in step with that tool.
#!/usr/bin/env python3
"""Normalized snapshot of a live database schema, and a diff of two snapshots.

  schema_snapshot.py snap URL [--out FILE]      print (or write) the schema as JSON
  schema_snapshot.py diff EXPECTED.json GOT     GOT is a JSON file or a database URL;
                                                prints one line per difference, then a
                                                summary line; exits 1 if any differ

What is compared, per table: columns in order (name, type as the dialect renders it,
nullable, server default), primary key, indexes (name, columns, unique), unique
constraints (name, columns), foreign keys (name, columns, referred table and columns),
and on MySQL/MariaDB the table's charset and collation.  The bookkeeping table
alembic_version is listed but its rows are not read.

Needs only SQLAlchemy and the database driver (PyMySQL for mysql+pymysql:// URLs).
"""

import argparse
import json
import sys

import sqlalchemy as sa


def _type(col, dialect):
    try:
        return col["type"].compile(dialect=dialect)
    except Exception:  # noqa: BLE001 - some reflected types cannot compile
        return repr(col["type"])


def snapshot(url):
    eng = sa.create_engine(url)
    insp = sa.inspect(eng)
    out = {"dialect": eng.dialect.name, "tables": {}}
    for name in sorted(insp.get_table_names()):
        cols = [
            [
                c["name"],
                _type(c, eng.dialect),
                bool(c["nullable"]),
                None if c.get("default") is None else str(c["default"]),
            ]
            for c in insp.get_columns(name)
        ]
        pk = insp.get_pk_constraint(name).get("constrained_columns") or []
        idx = {
            i["name"]: {"columns": list(i["column_names"]), "unique": bool(i.get("unique"))}
            for i in insp.get_indexes(name)
        }
        try:
            uq = {u["name"]: list(u["column_names"]) for u in insp.get_unique_constraints(name)}
        except NotImplementedError:
            uq = {}
        fks = sorted(
            (
                [
                    f.get("name"),
                    list(f["constrained_columns"]),
                    f["referred_table"],
                    list(f["referred_columns"]),
                ]
                for f in insp.get_foreign_keys(name)
            ),
            key=lambda f: (str(f[0]), f[1]),
        )
        opts = {}
        if eng.dialect.name == "mysql":
            o = insp.get_table_options(name)
            opts = {
                k: v
                for k, v in o.items()
                if k
                in (
                    "mysql_default charset",
                    "mysql_collate",
                    "mariadb_default charset",
                    "mariadb_collate",
                )
            }
        out["tables"][name] = {
            "columns": cols,
            "pk": pk,
            "indexes": idx,
            "uniques": uq,
            "fks": fks,
            "options": opts,
        }
    eng.dispose()
    return out


def _load(arg):
    if "://" in arg:
        return snapshot(arg)
    with open(arg) as f:
        return json.load(f)


def diff(exp, got):
    lines = []
    et, gt = exp["tables"], got["tables"]
    for t in sorted(set(et) - set(gt)):
        lines.append(f"missing table {t}")
    for t in sorted(set(gt) - set(et)):
        lines.append(f"extra table {t}")
    for t in sorted(set(et) & set(gt)):
        e, g = et[t], gt[t]
        ec = {c[0]: c for c in e["columns"]}
        gc = {c[0]: c for c in g["columns"]}
        for c in ec:
            if c not in gc:
                lines.append(f"{t}: missing column {c} {ec[c][1:]}")
            elif ec[c] != gc[c]:
                lines.append(f"{t}.{c}: expected {ec[c][1:]} got {gc[c][1:]}")
        for c in gc:
            if c not in ec:
                lines.append(f"{t}: extra column {c} {gc[c][1:]}")
        if [c for c in ec if c in gc] != [c for c in gc if c in ec]:
            lines.append(f"{t}: column order differs")
        for key in ("pk", "fks", "options"):
            if e[key] != g[key]:
                lines.append(f"{t}: {key} expected {e[key]} got {g[key]}")
        for key in ("indexes", "uniques"):
            for n in sorted(set(e[key]) | set(g[key]), key=str):
                if e[key].get(n) != g[key].get(n):
                    lines.append(
                        f"{t}: {key[:-1] if key == 'uniques' else 'index'} {n} "
                        f"expected {e[key].get(n)} got {g[key].get(n)}"
                    )
    return lines


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("snap")
    s.add_argument("url")
    s.add_argument("--out")
    d = sub.add_parser("diff")
    d.add_argument("expected")
    d.add_argument("got")
    a = ap.parse_args()
    if a.cmd == "snap":
        text = json.dumps(snapshot(a.url), indent=1, sort_keys=True)
        if a.out:
            with open(a.out, "w") as f:
                f.write(text + "\n")
        else:
            print(text)
        return 0
    lines = diff(_load(a.expected), _load(a.got))
    for line in lines:
        print(line)
    print(f"{len(lines)} schema differences")
    return 1 if lines else 0


if __name__ == "__main__":
    sys.exit(main())
