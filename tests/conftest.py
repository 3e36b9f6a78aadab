"""Shared fixtures. Real sample data is found through DOSEDIFF_SHARED_DATA
(default: ../shared/data beside the repository); tests that need it skip when absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    return Path(os.environ.get("DOSEDIFF_SHARED_DATA", REPO.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the real sample data; skips the test when it is not there."""
    root = shared_data_dir()
    if not root.is_dir():
        pytest.skip(f"sample data not found at {root}; set DOSEDIFF_SHARED_DATA to its folder")
    return root


@pytest.fixture(scope="session")
def openkbp_dir(shared_data: Path) -> Path:
    path = shared_data / "openkbp"
    if not path.is_dir():
        pytest.skip(f"OpenKBP sample not found at {path}")
    return path


@pytest.fixture(scope="session")
def ibsi_dir(shared_data: Path) -> Path:
    path = shared_data / "ibsi_sts"
    if not path.is_dir():
        pytest.skip(f"IBSI STS sample not found at {path}")
    return path


@pytest.fixture(scope="session")
def dicompyler_dir(shared_data: Path) -> Path:
    path = shared_data / "dicompyler_example"
    if not path.is_dir():
        pytest.skip(f"dicompyler example not found at {path}")
    return path
