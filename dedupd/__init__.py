"""dedupd: keeps image collections free of duplicates while people use them."""

__version__ = "0.1.0"
