"""A batch's statements on MySQL/MariaDB: from the batch's root ids down, in a fixed order.

A batch moves the rows below a set of locked root ids.  Two things made those
statements cost more than the rows they move:

* The ids.  Rendered into every statement as an ``IN (...)`` list of 1,000
  literals, they cost the client more than the server's work on small tables,
  and MariaDB turns such lists into a derived table that the optimizer may
  join last.  Here they travel once per statement as one bound JSON array,
  read by ``JSON_TABLE`` (MariaDB 10.6+, MySQL 8.0+: novadb's floor).
* The plan.  While archive deletes, InnoDB's statistics of a child table can
  fall to a few rows; the optimizer then scans the child whole and joins it
  to the roots.  That is a scan per batch, and since the batch's statements
  read under locks, it locks rows of other batches.  Here the join order is
  pinned (``STRAIGHT_JOIN``): the ids, the root by primary key, then each
  table down the chain through the index on its foreign key column (``FORCE
  INDEX``).  Every row a statement reads is a row of its batch.

MySQL's multi-table ``DELETE t FROM ...`` and an ``INSERT ... SELECT`` over a
table function have no SQLAlchemy construct; :class:`JoinedInsert` and
:class:`JoinedDelete` compile to them, every value a bound parameter.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement, ColumnElement

BATCH = "novadb_batch"  # the alias of the ids' JSON_TABLE in every statement
_PLAIN = re.compile(r"[A-Za-z0-9_]+")


@dataclass(frozen=True)
class Step:
    """Join ``table`` on ``on`` (through ``index`` when known), one level below the last."""

    table: sa.TableClause
    on: ColumnElement[bool]
    index: str | None


@dataclass(frozen=True)
class Chain:
    """From the root rows with ``ids`` down ``steps`` to the last step's table (or the root)."""

    root: sa.TableClause
    steps: tuple[Step, ...]
    ids: tuple[int, ...]

    @property
    def target(self) -> sa.TableClause:
        """The table whose rows the chain reaches."""
        return self.steps[-1].table if self.steps else self.root

    @property
    def fixed(self) -> bool:
        """Every step has an index to force, so the whole plan can be pinned."""
        return all(step.index is not None for step in self.steps)


class JoinedInsert(Executable, ClauseElement):
    """``INSERT INTO shadow (cols) SELECT target.cols FROM <chain> FOR UPDATE``.

    The read locks the rows it copies: under READ COMMITTED they are then the
    rows the DELETE removes, none changed in between.
    """

    inherit_cache = False  # holds tables and ids; compiled per batch, cheaply
    is_dml = True

    def __init__(self, shadow: sa.TableClause, columns: Sequence[str], chain: Chain) -> None:
        self.shadow = shadow
        self.columns = tuple(columns)
        self.chain = chain


class JoinedDelete(Executable, ClauseElement):
    """``DELETE target FROM <chain>``: the rows :class:`JoinedInsert` copied."""

    inherit_cache = False
    is_dml = True

    def __init__(self, chain: Chain) -> None:
        self.chain = chain


def _from(chain: Chain, compiler: SQLCompiler, **kw: Any) -> str:
    """The FROM clause: the ids as a table, the root by primary key, the steps down."""
    quote = compiler.preparer
    ids = sa.bindparam(None, json.dumps([int(i) for i in chain.ids]), type_=sa.String())
    join = "STRAIGHT_JOIN" if chain.fixed else "JOIN"
    root = quote.format_table(chain.root)
    parts = [
        f"JSON_TABLE({compiler.process(ids, **kw)}, '$[*]' COLUMNS (id INTEGER PATH '$')) "
        f"AS {BATCH}",
        f"{join} {root} ON {root}.{quote.quote('id')} = {BATCH}.id",
    ]
    for step in chain.steps:
        hint = f" FORCE INDEX ({step.index})" if chain.fixed else ""
        on = compiler.process(step.on, **kw)
        parts.append(f"{join} {quote.format_table(step.table)}{hint} ON {on}")
    return " ".join(parts)


@compiles(JoinedInsert)
def _compile_insert(element: JoinedInsert, compiler: SQLCompiler, **kw: Any) -> str:
    quote = compiler.preparer
    target = quote.format_table(element.chain.target)
    names = ", ".join(quote.quote(c) for c in element.columns)
    values = ", ".join(f"{target}.{quote.quote(c)}" for c in element.columns)
    return (
        f"INSERT INTO {quote.format_table(element.shadow)} ({names}) SELECT {values} "
        f"FROM {_from(element.chain, compiler, **kw)} FOR UPDATE"
    )


@compiles(JoinedDelete)
def _compile_delete(element: JoinedDelete, compiler: SQLCompiler, **kw: Any) -> str:
    target = compiler.preparer.format_table(element.chain.target)
    return f"DELETE {target} FROM {_from(element.chain, compiler, **kw)}"


def fk_index(table: sa.Table, column: str) -> str | None:
    """The index that starts with ``column`` and has the fewest columns (None: no index)."""
    found = [
        (len(index.columns), index.name)
        for index in table.indexes
        # Only plain names: the hint names the index as it is.
        if isinstance(index.name, str) and _PLAIN.fullmatch(index.name)
        and list(index.columns)[:1] and list(index.columns)[0].name == column
    ]  # fmt: skip
    return min(found)[1] if found else None
