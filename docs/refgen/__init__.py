"""The parts of ``docs/gen_reference.py``, one concept per module.

- ``markdown``: where the pages go, and the table and page helpers every page uses.
- ``prose``: the one-line prose for each fact, and the check that it matches the code.
- ``plugins``: the built-in plugins, whose config, routes, events and pages are documented.
- ``cli``, ``config``, ``states``, ``signals``, ``endpoints``, ``exit_codes``, ``events``: one
  ``render_*()`` per reference page, reading the facts from the code.
"""
