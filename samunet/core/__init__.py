"""samunet's neutral core: the facts every layer shares, written once.

- ``names``: adapter and backbone names, file and folder names (plans, checkpoints, caches).
- ``paths``: the three data roots and dataset ids; ``layout``: where each stage's files live.
- ``plans``: the typed, versioned plans; ``records``: their JSON round-trip.
- ``errors``: ``SamunetUserError``, the base of every error a user can fix; commands print it as one line.

The core imports nothing from samunet but ``samunet.utils`` (which imports nothing from samunet), so any
layer may import it without a cycle (``tests/test_layering.py`` checks this).
"""
