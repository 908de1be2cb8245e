"""Reading and summarizing overlaybd's log and audit files (the ``overlaybd-logstat`` tool)."""
