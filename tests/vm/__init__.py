"""Tests that boot the User-Mode Linux kernel (scripts/uml): marked ``vm``."""
