"""zo-edge: continual learning on Cortex-M with ZO-FC, simulated bit for bit on the desktop."""

from zo_edge.errors import ZoEdgeError

__version__ = "0.1.0"
__all__ = ["ZoEdgeError", "__version__"]
