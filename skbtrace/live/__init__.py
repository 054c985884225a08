"""The live pipeline: checks, compile and attach (loader.py, the only module
that imports bcc), the run loop, in-kernel filters, statistics, the
detector's netlink STATIC section."""
