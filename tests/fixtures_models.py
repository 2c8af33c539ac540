"""Fixtures (see conftest.py for ownership)."""
