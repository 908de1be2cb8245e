"""On-disk and kernel structures, one module per format (``lsmt``, ``zfile``, ``tar``, ...).

Only layouts, constants and codecs live here; policy lives in the packages that use them.
"""
