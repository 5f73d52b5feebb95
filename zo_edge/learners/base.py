"""What every learner shares: the task loop, prediction over seen classes, counters, state files.

A learner implements ``begin_task(task)``, ``train_step(idx, y, allowed, epoch, counters)``,
``logits(x)``, ``state()`` / ``load_state(state)``, ``state_bytes()`` and ``part_values()`` (the
adapters' and the classifier's float values, flat); this class turns those into ``fit_task`` /
``predict`` / ``save`` / ``load``. Batches are a seeded shuffle of the task's samples (seed, task,
epoch), so two runs with one seed see the same stream. ``fit_task`` also measures, per part, the L2
norm of every step's update and the drift of the task (end minus start), in float units.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from zo_edge.errors import ZoEdgeError
from zo_edge.learners.config import LearnerConfig


class Learner:
    mode = "?"
    variants_per_call = None  # int8: how many probes one engine call carries (None: all 2q)

    def __init__(self, run: dict, config: LearnerConfig):
        self.run = run
        self.config = config
        self.step = 0  # global step counter: a coordinate of every random draw
        self.macs = {"prefix": 0, "suffix": 0}  # per sample; set from the graph by subclasses

    # -- to implement ----------------------------------------------------------------------------
    def begin_task(self, task) -> None: ...

    def train_step(self, idx, y, allowed, epoch: int, counters: dict) -> None: ...

    def logits(self, x) -> np.ndarray:
        raise NotImplementedError

    def state(self) -> dict:
        raise NotImplementedError

    def load_state(self, state: dict) -> None:
        raise NotImplementedError

    def state_bytes(self) -> dict:
        raise NotImplementedError

    def settings(self) -> dict:
        return {}

    def part_values(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    # -- the shared loop -------------------------------------------------------------------------
    def fit_task(self, task, progress=None) -> dict:
        """Train on one task (old-class logits masked: only ``task.classes`` compete); returns counters."""
        cfg = self.config
        classes = np.asarray(task.classes, dtype=np.int64)
        if classes.max(initial=0) >= self.num_classes:
            raise ZoEdgeError(f"task {task.name!r} has class {int(classes.max())} but the classifier holds "
                              f"{self.num_classes} classes; rebuild the run for this scenario")
        allowed = np.zeros(self.num_classes, dtype=bool)
        allowed[classes] = True
        counters = {"task": int(task.index), "steps": 0, "forward_passes": 0, "prefix_passes": 0,
                    "suffix_passes": 0, "macs": 0, "saturation_events": 0}
        y_all = np.asarray(task.y_train, dtype=np.int64)
        if cfg.method == "frozen" or cfg.epochs == 0 or len(y_all) == 0:
            return counters
        self.begin_task(task)
        first = before = self.part_values()
        norms = {part: [] for part in first}
        for epoch in range(cfg.epochs):
            order = np.random.default_rng([cfg.seed, int(task.index), epoch]).permutation(len(y_all))
            for start in range(0, len(order), cfg.batch_size):
                idx = np.sort(order[start : start + cfg.batch_size])
                self.train_step(idx, y_all[idx], allowed, epoch, counters)
                after = self.part_values()
                for part in norms:
                    norms[part].append(_norm(after[part] - before[part]))
                before = after
                self.step += 1
                counters["steps"] += 1
                if progress is not None:
                    progress()
        counters["drift"] = {part: _norm(before[part] - first[part]) for part in first}
        counters["update_norms"] = {part: {"mean": float(np.mean(v)), "median": float(np.median(v)),
                                           "max": float(np.max(v)), "steps": len(v)} for part, v in norms.items()}
        return counters

    def count(self, counters: dict, batch: int, suffix_passes: int) -> None:
        """Device-equivalent work of a step: the prefix once per sample, the suffix ``suffix_passes`` times."""
        counters["forward_passes"] += suffix_passes
        counters["prefix_passes"] += batch
        counters["suffix_passes"] += batch * suffix_passes
        counters["macs"] += batch * (self.macs["prefix"] + suffix_passes * self.macs["suffix"])

    def predict(self, x, classes) -> np.ndarray:
        """Class labels for samples x, argmax over ``classes`` only (the classes seen so far)."""
        classes = np.asarray(classes, dtype=np.int64)
        if len(x) == 0:
            return np.zeros(0, dtype=np.int64)
        return classes[np.argmax(self.logits(x)[:, classes], axis=1)]

    # -- state files -----------------------------------------------------------------------------
    def save(self, path) -> Path:
        path = Path(path)
        np.savez(path, **self.state())
        return path

    def load(self, path) -> None:
        try:
            with np.load(path) as data:
                self.load_state(dict(data))
        except (OSError, ValueError, KeyError) as exc:
            raise ZoEdgeError(f"{path} is not a state file of this learner ({exc})") from None



def _norm(x: np.ndarray) -> float:
    return float(np.sqrt(np.sum(np.square(np.asarray(x, dtype=np.float64)))))
