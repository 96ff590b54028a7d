"""``check``: the read-only pre-upgrade report.

It asks every domain what would go wrong (pending revisions and their
blockers, online migrations, archivable and held-back rows, shadow drift,
mappings, the Placement audit, dialect settings) and turns the answers into
findings (``novadb.findings``).

May import: the shared core and the domains (``schema``, ``archive``,
``online``, ``placement``).  Never ``sample``, ``render`` or ``cli``.
"""
