"""Shared fixtures. Real data comes from ../shared/data (relative to the repository root); tests that
need it are skipped, with the reason, when it is absent (e.g. a user's clone without shared/)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SQUEEZELAB_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))

# Tests run on 2-core CI machines: keep torch from oversubscribing and keep runs reproducible.
torch.set_num_threads(min(2, os.cpu_count() or 1))


class SharedData(type(Path())):
    """../shared/data whose children skip the test that asks for one that is absent: each test
    skips for its own data only (a machine may hold Tiny ImageNet but not the CIFAR subset)."""

    def __truediv__(self, part):
        return shared_path(*Path(self).relative_to(SHARED_DATA).parts, str(part))

    def joinpath(self, *parts):
        return shared_path(*Path(self).relative_to(SHARED_DATA).parts, *map(str, parts))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The ../shared/data folder, or skip the test with a reason."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (set SQUEEZELAB_SHARED_DATA)")
    return SharedData(SHARED_DATA)


def shared_path(*parts: str) -> Path:
    """A path under ../shared/data, skipping the calling test if it is absent."""
    path = Path(SHARED_DATA).joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not found: {path}")
    return path
