"""novadb: the database operations of an OpenStack Nova control plane.

The shared core sits at the top of the package (configuration, connections,
cells and targets, fan-out, locking, batching, database errors, progress,
findings, dates); each domain is a package over it: ``schema``, ``archive``,
``online``, ``placement`` and ``check``; ``render`` turns results into text;
``cli`` is the ``novadb`` command; ``sample`` builds sample clouds and the
demo.  The import rules between them are contracts in ``pyproject.toml``.
"""
