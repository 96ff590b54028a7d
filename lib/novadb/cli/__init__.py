"""The ``novadb`` command: argparse wiring, output and progress bars.

``main`` holds the parser and the core operations' commands, ``placement``
the Placement operations' commands, ``output`` where results and progress go,
``progress`` the bars and Ctrl-C handling.  No module here imports ``main``.

May import: anything in the library.  Nothing in the library imports it.
"""
