"""The SQL of archiving: which rows of a table's tree move, as set-based statements.

A *tree* is a root table (``instances``) with every table that references it
through Nova's model foreign keys, recursively (``instance_actions_events``
through ``instance_actions``).  One batch moves a set of root rows and, in the
same transaction, every row below them, deepest table first: one
``INSERT INTO shadow_x SELECT ...`` and one ``DELETE`` per table, both with the
same predicate, so the two row counts must agree.

Rows are eligible on their own when ``deleted != 0`` (optionally
``deleted_at < before``); ``task_log`` rows with ``--task-log`` are all
eligible (optionally ``updated_at < before``).  Children follow their parent
whatever their own ``deleted`` value.  A root row that a table archive does
not move still references (a legacy ``fixed_ips`` row, a ``share_mapping``
row) stays live instead of failing the whole batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Inspector
from sqlalchemy.sql.elements import ColumnElement

from novadb.archive.graph import Edge, Graph
from novadb.archive.joined import Chain, JoinedDelete, JoinedInsert, Step, fk_index


def id_list(ids: Sequence[int]) -> sa.BindParameter[Any]:
    """A list of integer ids rendered inline by SQLAlchemy at execution.

    The same list goes into some 25 statements of a batch; as 1,000 bound
    parameters each it costs more to escape and expand than the statement
    costs the server.  The values are integers read from the database.
    """
    return sa.bindparam(None, [int(i) for i in ids], expanding=True, literal_execute=True)


Keys = dict[tuple[str, str], list[Any]]
"""Known key values per (table, column) of one batch."""


@dataclass(frozen=True)
class Criteria:
    """Which rows are eligible on their own."""

    before: datetime | None = None
    task_log: bool = False


@dataclass(frozen=True)
class Blocker:
    """``table.column`` references ``root.parent_column`` and archive does not move ``table``."""

    table: str
    column: str
    parent_column: str


@dataclass(frozen=True)
class Move:
    """The statements that move one table's share of a batch."""

    table: str
    insert: sa.Insert | JoinedInsert
    delete: sa.Delete | JoinedDelete


class Schema:
    """Reflected live and shadow tables of one cell database, with archive's graph."""

    def __init__(self, conn: Connection, graph: Graph, inspector: Inspector | None = None) -> None:
        self.graph = graph
        # One inspector (the one load_graph used, when given) reads each
        # table's definition once: reflection is most of a run's start-up.
        if inspector is None:
            inspector = sa.inspect(conn)
        names = list(graph.tables) + [f"shadow_{t}" for t in graph.tables]
        meta = sa.MetaData()
        for name in names:
            if name not in meta.tables:
                inspector.reflect_table(sa.Table(name, meta), None)
        self.live = {t: meta.tables[t] for t in graph.tables}
        self.shadow = {t: meta.tables[f"shadow_{t}"] for t in graph.tables}
        self.blockers = _blockers(inspector, graph)
        # MySQL/MariaDB: reach children from the batch's root ids through a
        # pinned join (novadb.archive.joined), not through IN lists of keys.
        self.joins = conn.dialect.name == "mysql"
        # The index on each foreign key column, to pin the join's plan.
        self.indexes: dict[tuple[str, str], str] = {}
        for edge in graph.edges:
            if edge.child in self.live:
                index = fk_index(self.live[edge.child], edge.column)
                if index is not None:
                    self.indexes[(edge.child, edge.column)] = index

    def drift(self, table: str) -> list[str]:
        """Live columns the shadow twin lacks (archive would lose their values)."""
        shadow = set(self.shadow[table].c.keys())
        return [c.name for c in self.live[table].c if c.name not in shadow]

    def tree(self, root: str, criteria: Criteria) -> Tree:
        """The tree rooted at ``root`` under ``criteria``."""
        return Tree(self, root, criteria)


def _blockers(inspector: Inspector, graph: Graph) -> dict[str, list[Blocker]]:
    """Foreign keys into archivable tables from rows archive never moves."""
    movable = {(e.child, e.column, e.parent) for e in graph.edges}
    live = [t for t in inspector.get_table_names() if not t.startswith("shadow_")]
    out: dict[str, list[Blocker]] = {}
    for (_schema, table), fks in inspector.get_multi_foreign_keys(filter_names=live).items():
        for fk in fks:
            parent = fk["referred_table"]
            if parent not in graph.tables or len(fk["constrained_columns"]) != 1:
                continue
            column = fk["constrained_columns"][0]
            if (table, column, parent) in movable:
                continue
            out.setdefault(parent, []).append(Blocker(table, column, fk["referred_columns"][0]))
    return out


def _own(table: sa.Table, name: str, criteria: Criteria) -> ColumnElement[bool]:
    """Rows eligible on their own (Nova's rule, including its task_log quirks)."""
    if name == "task_log" and criteria.task_log:
        if criteria.before is not None:
            return table.c.updated_at < criteria.before
        return sa.true()
    clause: ColumnElement[bool] = table.c.deleted != 0
    # Nova filters task_log by date only with --task-log; without it, deleted
    # task_log rows move whatever their age.
    if criteria.before is not None and name != "task_log":
        clause = sa.and_(clause, table.c.deleted_at < criteria.before)
    return clause


class Tree:
    """One root table and the tables that move with its rows."""

    def __init__(self, schema: Schema, root: str, criteria: Criteria) -> None:
        self.schema = schema
        self.root = root
        self.criteria = criteria
        self.edges: tuple[Edge, ...] = schema.graph.subtree(root)
        order: list[str] = []
        for edge in self.edges:  # deepest first already; keep first sighting
            if edge.child not in order:
                order.append(edge.child)
        self.children: tuple[str, ...] = tuple(order)
        self.key_columns: tuple[str, ...] = tuple(
            sorted({"id", *(e.parent_column for e in self.edges if e.parent == root)})
        )

    @property
    def tables(self) -> tuple[str, ...]:
        """Every table of the tree, in the order rows move (root last)."""
        return (*self.children, self.root)

    def drift(self) -> dict[str, list[str]]:
        """Per table of the tree, live columns its shadow twin lacks."""
        found = {t: self.schema.drift(t) for t in self.tables}
        return {t: cols for t, cols in found.items() if cols}

    def eligible(self) -> ColumnElement[bool]:
        """Root rows that may move now: eligible, and referenced by nothing we leave."""
        root = self.schema.live[self.root]
        clauses = [_own(root, self.root, self.criteria)]
        for b in self.schema.blockers.get(self.root, []):
            ref = sa.table(b.table, sa.column(b.column))
            clauses.append(~sa.exists().where(ref.c[b.column] == root.c[b.parent_column]))
        return sa.and_(*clauses)

    def held_back(self) -> sa.Select[Any]:
        """Count of root rows eligible on their own but kept live by a blocker."""
        root = self.schema.live[self.root]
        return (
            sa.select(sa.func.count())
            .select_from(root)
            .where(_own(root, self.root, self.criteria), ~self.eligible())
        )

    def candidates(self, after: int, limit: int) -> sa.Select[Any]:
        """The next ``limit`` eligible root ids after ``after`` (keyset walk, no OFFSET)."""
        root = self.schema.live[self.root]
        return (
            sa.select(root.c.id)
            .where(self.eligible(), root.c.id > after)
            .order_by(root.c.id)
            .limit(limit)
        )

    def lock(self, ids: Sequence[int]) -> sa.Select[Any]:
        """Re-check candidates inside the batch's transaction and lock them."""
        root = self.schema.live[self.root]
        return (
            sa.select(*(root.c[c] for c in self.key_columns))
            .where(root.c.id.in_(ids), self.eligible())
            .order_by(root.c.id)
            .with_for_update()
        )

    def member(self, table: str, keys: Keys, tables: dict[str, sa.Table]) -> ColumnElement[bool]:
        """Rows of ``table`` (in ``tables``: live or shadow) that belong to this batch.

        A parent's key values come from ``keys`` when known (the root's locked
        rows, and what :meth:`expand` read), else from a subquery.
        """
        t = tables[table]
        if table == self.root:
            return t.c.id.in_(id_list(keys[(self.root, "id")]))
        clauses = []
        for edge in self.edges:
            if edge.child != table:
                continue
            known = keys.get((edge.parent, edge.parent_column))
            if known is not None:
                clauses.append(t.c[edge.column].in_([v for v in known if v is not None]))
            else:
                parent = tables[edge.parent]
                parents = sa.select(parent.c[edge.parent_column]).where(
                    self.member(edge.parent, keys, tables)
                )
                clauses.append(t.c[edge.column].in_(parents))
        return sa.or_(*clauses)

    def root_keys(self, rows: Sequence[Any]) -> Keys:
        """Key values of the locked root rows, as :meth:`member` wants them."""
        return {(self.root, c): [r[i] for r in rows] for i, c in enumerate(self.key_columns)}

    def path(self, table: str) -> list[Edge] | None:
        """The one chain of edges from ``table`` up to the root, or None if there are several."""
        out: list[Edge] = []
        current = table
        while current != self.root:
            ups = [e for e in self.edges if e.child == current]
            if len(ups) != 1:
                return None
            out.append(ups[0])
            current = ups[0].parent
        return out

    def chain(self, table: str, ids: Sequence[int]) -> Chain | None:
        """The join from the root rows ``ids`` down to ``table`` (MySQL), or None."""
        path = [] if table == self.root else self.path(table)
        if not self.schema.joins or path is None:
            return None
        live = self.schema.live
        steps = tuple(
            Step(
                live[e.child],
                live[e.child].c[e.column] == live[e.parent].c[e.parent_column],
                self.schema.indexes.get((e.child, e.column)),
            )
            for e in reversed(path)  # the root's child first
        )
        return Chain(live[self.root], steps, tuple(ids))

    @property
    def all_joined(self) -> bool:
        """Every child is reached by a join (no inner keys to read first)."""
        return self.schema.joins and all(self.path(t) is not None for t in self.children)

    def expand(self, conn: Connection, keys: Keys) -> Keys:
        """Read (and lock) the key values of the tree's inner parents, top down.

        ``DELETE ... WHERE x IN (SELECT ...)`` is not semi-join optimised by
        MariaDB: the subquery would run once per row of the child table.  With
        the values read first, every statement is an index lookup.  Locking
        them keeps the set fixed until the batch commits.
        """
        out = dict(keys)
        if self.all_joined:
            return out
        for edge in reversed(self.edges):  # parents before their children
            key = (edge.parent, edge.parent_column)
            if edge.parent == self.root or key in out:
                continue
            parent = self.schema.live[edge.parent]
            query = (
                sa.select(parent.c[edge.parent_column])
                .where(self.member(edge.parent, out, self.schema.live))
                .with_for_update()
            )
            out[key] = [r[0] for r in conn.execute(query)]
        return out

    def moves(self, keys: Keys) -> list[Move]:
        """INSERT...SELECT and DELETE per table, children first, root last."""
        out = []
        ids = keys[(self.root, "id")]
        for name in self.tables:
            live, shadow = self.schema.live[name], self.schema.shadow[name]
            columns = list(live.c.keys())
            chain = self.chain(name, ids)
            if chain is not None:
                out.append(Move(name, JoinedInsert(shadow, columns, chain), JoinedDelete(chain)))
                continue
            where = self.member(name, keys, self.schema.live)
            # A locking read, as JoinedInsert's: under READ COMMITTED the rows
            # copied are then the rows the DELETE removes.
            rows = sa.select(*(live.c[c] for c in columns)).where(where).with_for_update()
            out.append(Move(name, shadow.insert().from_select(columns, rows),
                            sa.delete(live).where(where)))  # fmt: skip
        return out

    def shadow_counts(self, keys: Keys) -> dict[str, sa.Select[Any]]:
        """Count this batch's rows in the shadow tables (after a lost connection)."""
        return {
            name: sa.select(sa.func.count())
            .select_from(self.schema.shadow[name])
            .where(self.member(name, keys, self.schema.shadow))
            for name in self.tables
        }

    def duplicates(self, table: str, keys: Keys) -> sa.Select[Any]:
        """Ids of this batch's ``table`` rows that its shadow twin already holds."""
        live, shadow = self.schema.live[table], self.schema.shadow[table]
        return (
            sa.select(shadow.c.id)
            .where(shadow.c.id.in_(sa.select(live.c.id).where(
                self.member(table, keys, self.schema.live))))
            .order_by(shadow.c.id)
            .limit(20)
        )  # fmt: skip


def moved_clause(
    schema: Schema,
    criteria: Criteria,
    name: str,
    failed: frozenset[str] = frozenset(),
    depth: int = 0,
) -> ColumnElement[bool]:
    """Rows of ``name`` that an archive to completion moves.

    A row moves when it is eligible on its own (and, as a root, not held
    back), or when it references a row that moves: the closure the real run
    reaches table by table.
    """
    table = schema.live[name]
    own = sa.false() if name in failed else Tree(schema, name, criteria).eligible()
    clauses: list[ColumnElement[bool]] = [own]
    if depth < 8:
        for edge in schema.graph.edges:
            if edge.child == name:
                parent = schema.live[edge.parent]
                parents = sa.select(parent.c[edge.parent_column]).where(
                    moved_clause(schema, criteria, edge.parent, failed, depth + 1)
                )
                clauses.append(table.c[edge.column].in_(parents))
    return sa.or_(*clauses)


def would_move(
    schema: Schema, criteria: Criteria, failed: frozenset[str] = frozenset()
) -> dict[str, sa.Select[Any]]:
    """Per table, a count of the rows an archive to completion would move (dry run).

    Trees in ``failed`` (shadow drift) move nothing as roots, as in a real run.
    """
    return {
        name: sa.select(sa.func.count())
        .select_from(schema.live[name])
        .where(moved_clause(schema, criteria, name, failed))
        for name in schema.graph.tables
    }
