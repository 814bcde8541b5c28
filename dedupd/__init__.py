"""dedupd: keeps image collections free of duplicates while people use them."""

__version__ = "0.1.0"
# The day this version was cut: the man pages carry it, so they are the same whenever they are generated.
__release_date__ = "2026-12-02"
