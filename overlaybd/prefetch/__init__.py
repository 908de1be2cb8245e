"""Trace-based prefetch (spec §11) and learned prefetch.

* ``trace``     the binary trace format (``overlaybd/abi/trace.py``): encode, validate, load;
* ``recorder``  a layer wrapper that records every full read into a spool shared by all the
                processes serving a device;
* ``replay``    reader threads replaying a trace through the image stack, behind a gate that
                gives device I/O priority;
* ``filelist``  a text trace (list of paths) turned into reads through ``overlaybd.ext4``;
* ``learned``   traces the daemon learns by itself, kept in the cache directory;
* ``session``   per-device modes and life cycle, used by the daemon (``PrefetchService``).

The package imports none of them: it straddles the image.  ``recorder`` sits below it (the
image opener wraps layers with it), ``session`` above it (it opens images to replay), so
importing the package must not load ``session``.  Import the module you need.
"""
