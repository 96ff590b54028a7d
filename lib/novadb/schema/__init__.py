"""Nova's and Placement's schemas: ``sync``, ``version`` and what they need.

The Alembic environments' shared body, the revision and release tables, the
data blockers a revision must not run into, ``null-instance-uuid-scan`` and the
column types the revision scripts use.

May import: the shared core (``novadb.<module>`` at the top level).  Nothing
here imports another domain, ``render`` or ``cli``.
"""
