"""zo-edge: continual learning on Cortex-M with ZO-FC, simulated bit for bit on the desktop.

The command line's jobs as Python calls (``zo_edge.api``): ``build_run``, ``load_run``, ``simulate``,
``export``, ``verify_firmware``, ``profile``. They are imported on first use, so ``import zo_edge``
stays light.
"""

from zo_edge.errors import ZoEdgeError

__version__ = "0.2.0"
_API = ("build_run", "load_run", "simulate", "export", "verify_firmware", "profile", "RunFolder")
__all__ = ["ZoEdgeError", "__version__", *_API]


def __getattr__(name):
    if name in _API:
        from zo_edge import api

        return getattr(api, name)
    raise AttributeError(f"module 'zo_edge' has no attribute {name!r}")
