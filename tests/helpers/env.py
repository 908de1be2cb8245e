"""The test environment: where the repository and the test data are, whether this is CI, and
``need`` (skip locally, fail in CI) for tests whose prerequisite (kernel, registry, root) is missing."""

import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data"
GOLDEN = DATA / "golden"
IN_CI = bool(os.environ.get("CI"))


def need(condition, why):
    """Skip (locally) or fail (in CI) when a prerequisite is missing."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"prerequisite missing in CI: {why}")
    pytest.skip(why)
