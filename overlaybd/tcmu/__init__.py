"""The kernel side of overlaybd-tcmu: TCMU ring mechanics (``ring``), uio and netlink, SCSI
emulation (``scsi``), the supervisor (``daemon``) and an in-process fake kernel for unit tests."""
