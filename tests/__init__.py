"""The test suite.  A package, so that every test and helper imports the same way from the
repository root: fixtures come from the conftest.py files, everything else by name from
``tests.helpers.<topic>`` (e.g. ``from tests.helpers.tcmu import DaemonHarness``)."""
