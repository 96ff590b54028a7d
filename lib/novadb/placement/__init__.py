"""Keeping the Placement database true to Nova.

``placement-audit``, ``heal-allocations``, ``sync-aggregates`` and
``rebuild-placement``; the flavor-to-resources rules; the Nova-side reader
(``nova_side``: what the cells say Placement should hold); the Placement data
layer (``db``: generations, compare-and-swap writes); and ``backup/``, the
rebuild's backup and restore.

May import: the shared core and ``schema`` (a rebuild recreates Placement's
schema).  Never ``archive``, ``online``, ``check``, ``sample``, ``render`` or
``cli``.
"""
