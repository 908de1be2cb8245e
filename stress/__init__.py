"""Stress harnesses, run as modules: ``python3 -m stress.engine_stress --help``."""
