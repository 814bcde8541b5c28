"""imagededup's `imagededup.utils` face: `plot_duplicates` (needs the `plot` extra: matplotlib)."""

from dedupd.utils.plotter import plot_duplicates

__all__ = ["plot_duplicates"]
