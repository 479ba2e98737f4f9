"""Fixtures for the trainer's tests: where the shared real data sets lie."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def datasets() -> Path:
    """The read-only public data sets, in the folder beside the checkout (CI has them too)."""
    path = REPO_ROOT.parent / "shared" / "datasets"
    assert path.is_dir(), f"the shared data sets are expected at {path}"
    return path
