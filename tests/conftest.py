"""Shared fixtures: where the public conformance suite and the seeds live (beside the checkout, in ../shared)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def conformance_dir() -> Path:
    path = SHARED / "conformance"
    if not (path / "tests").is_dir():
        pytest.skip(f"the conformance suite is not at {path} (it ships beside the checkout in ../shared)")
    return path


@pytest.fixture(scope="session")
def seeds_dir() -> Path:
    path = SHARED / "seeds"
    if not path.is_dir():
        pytest.skip(f"the seeds are not at {path}")
    return path
