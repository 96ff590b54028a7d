"""``api``: the public verbs, each ``op(settings, options, *, progress, stop) -> Result``.

The package ``novadb`` re-exports them (with their options, results and the
error hierarchy); the CLI and the charm call them, never the domain
functions behind them.

May import: the shared core and the domains (``schema``, ``archive``,
``online``, ``placement``, ``check``).  Never ``sample``, ``render`` or ``cli``.
"""
