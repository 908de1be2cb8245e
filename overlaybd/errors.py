"""Errors raised by overlaybd.  Every error names the file (and field) that caused it."""

import errno as _errno


class OverlaybdError(Exception):
    """Base error.  ``path`` is the file involved, ``field`` the offending field, if known."""

    errno = _errno.EIO

    def __init__(self, message, path=None, field=None, errno=None):
        self.message = message
        self.path = path
        self.field = field
        if errno is not None:
            self.errno = errno
        parts = []
        if path:
            parts.append(str(path))
        if field:
            parts.append(f"field '{field}'")
        prefix = ": ".join(parts)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class FormatError(OverlaybdError):
    """A blob or file is malformed (bad magic, truncated, index out of range...)."""

    errno = _errno.EINVAL


class ChecksumError(FormatError):
    """A CRC did not match after all retries."""

    errno = _errno.EIO


class ConfigError(OverlaybdError):
    """A JSON configuration file is invalid: wrong type, bad value, unreadable."""

    errno = _errno.EINVAL


class ReadOnlyError(OverlaybdError):
    errno = _errno.EROFS


class RemoteError(OverlaybdError):
    """A registry request failed; ``reason`` is the resultFile wording (spec §4)."""

    def __init__(self, message, path=None, reason=None, errno=None, status=None):
        super().__init__(message, path=path, errno=errno)
        self.reason = reason or message
        self.status = status
