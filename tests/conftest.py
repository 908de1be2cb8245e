"""Shared test settings.  In CI (CI set in the environment) a missing fixture fails the
test instead of skipping it: kernel and registry tests must run there."""

import json
import os
import pathlib

import pytest

DATA = pathlib.Path(__file__).parent / "data"
GOLDEN = DATA / "golden"
IN_CI = bool(os.environ.get("CI"))


def need(condition, why):
    """Skip (locally) or fail (in CI) when a prerequisite is missing."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"prerequisite missing in CI: {why}")
    pytest.skip(why)


@pytest.fixture(scope="session")
def golden_manifest():
    with open(GOLDEN / "manifest.json") as f:
        return json.load(f)
