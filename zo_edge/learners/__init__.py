"""Continual learners: ZO-FC and its baselines, in float (reference) and int8 (device) mode.

One interface (``base.Learner``): ``fit_task(task)``, ``predict(x, classes)``, ``save`` / ``load``.
``make_learner(run, config)`` picks the implementation for the method and mode.
"""

from __future__ import annotations

from zo_edge.learners.config import METHODS, MODES, LearnerConfig


def make_learner(run: dict, config: LearnerConfig, prefix_cache=None):
    """A learner for ``config.method`` in ``config.mode`` on the model of a run folder (``build.load_run``).
    ``prefix_cache``: a ``zo_edge.prefix_cache.PrefixCache`` the int8 learners share (default: their own)."""
    config.check()
    if config.mode == "int8" and config.method != "fo":
        from zo_edge.learners.int8_learner import Int8Learner

        return Int8Learner(run, config, prefix_cache=prefix_cache)
    from zo_edge.learners.float_learner import FloatLearner

    return FloatLearner(run, config)


__all__ = ["LearnerConfig", "METHODS", "MODES", "make_learner"]
