"""Sample clouds and the demo.

Generators that fill cell, API and Placement databases with a cloud shaped like
a real one (used by the demo, the tests and the benchmarks), and ``demo``,
which runs the whole pre-upgrade flow on such a cloud.

May import: the shared core and every domain.  Never ``render`` or ``cli``.
"""
