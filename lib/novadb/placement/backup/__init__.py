"""The Placement backup that ``rebuild-placement`` writes first and ``--restore`` reads.

``file`` is the format (gzip'd JSON lines, digests), ``dialect`` the MySQL and
SQLite differences in reading and writing rows, ``schema`` the checks that a
backup fits the database, ``database`` the backup and restore themselves.

May import: the shared core, ``schema`` and its own siblings.
"""
