"""The I/O engine: inline or in CPU-pinned worker processes (docs/engine.md)."""

from ..abi.ops import (
                  OP_DISCARD,
                  OP_FLUSH,
                  OP_READ,
                  OP_WRITE,
                  ST_FLUSH_ERR,
                  ST_GOOD,
                  ST_READ_ERR,
                  ST_WRITE_ERR,
                  ST_WRITE_PROTECT,
)
from .engine import CommandError, Engine

__all__ = [
                  "OP_DISCARD",
                  "OP_FLUSH",
                  "OP_READ",
                  "OP_WRITE",
                  "ST_FLUSH_ERR",
                  "ST_GOOD",
                  "ST_READ_ERR",
                  "ST_WRITE_ERR",
                  "ST_WRITE_PROTECT",
                  "CommandError",
                  "Engine",
]
