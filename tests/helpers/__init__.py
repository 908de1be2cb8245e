"""Helpers the tests import by name (``from tests.helpers.zfile import mixed_data``): builders
of layers and images, harnesses around the daemon and the engine, the registry and UML
launchers.  pytest fixtures live in tests/conftest.py, not here."""
