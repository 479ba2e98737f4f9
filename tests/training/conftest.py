"""Fixtures for the trainer's tests (the shared data sets' fixture lives in tests/conftest.py)."""
