"""``archive`` and ``purge``: soft-deleted rows into shadow tables, and out again.

The schema graph (which tables hang off which, and their shadows), the SQL that
moves one tree of rows per batch, the run loop and purge.

May import: the shared core.  Never ``schema``, ``online``, ``placement``,
``check``, ``sample``, ``render`` or ``cli``.
"""
