"""overlaybd in Python: container images as lazily fetched virtual block devices.

The I/O stack is a chain of file-like objects with ``pread`` (see ``overlaybd.io``):
merged view -> layer (tar -> zfile -> lsmt) -> source (local file, cache, registry).
"""

__version__ = "0.1.0"
USER_AGENT = f"overlaybd/{__version__}"     # the default HTTP User-Agent (overlaybd.json userAgent)
REGISTRY_TIMEOUT = 30.0     # seconds per registry request (upstream's fixed value; no JSON field)
SERVICE_CONFIG = "/etc/overlaybd/overlaybd.json"    # the daemon's and the tools' default
