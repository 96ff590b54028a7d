"""Online data migrations: Nova 34's registry and Placement's, batched and honest.

See :mod:`novadb.online.base` for the contract every migration keeps and
:mod:`novadb.online.runner` for the loop ``novadb online-migrate`` runs.

May import: the shared core.  Never ``schema``, ``archive``, ``placement``,
``check``, ``sample``, ``render`` or ``cli``.
"""
