"""Result objects into text: tables for people, nova-manage's text, JSON.

Shared by the CLI and the charm, so both say the same thing the same way.
Operations never print; they return results that these functions render.

May import: the core and the domains' result types.  Imported only by
``novadb.cli`` and the charm (``src/``).
"""
