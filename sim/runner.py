"""Run a learner over a run folder's scenario, for several seeds, and summarise it as results.json.

The scenario is the one the run was built for (its dataset, kind, class order); task 0 is the base
task the model was pretrained on, evaluated before any continual training. After every task t the
learner is evaluated on every seen task i: R[t][i] is the accuracy (%) on task i's test samples,
predicting among all classes seen so far. Seeds vary the learner's randomness — batch order,
perturbation directions, stochastic rounding — not the pretrained model, which is the run's.
"""

from __future__ import annotations

import dataclasses
import time
from datetime import datetime, timezone

import numpy as np

from sim import metrics
from zo_edge.learners import LearnerConfig, make_learner

FORMAT = "zo-edge/results@1"


def _accuracy(learner, xs, ys, classes) -> float:
    """Accuracy (%) over several test sets together. Each set is predicted on its own (a prediction is
    per sample), so its frozen prefix is the one cached for that set, not a new concatenation's."""
    y = np.concatenate(ys)
    predicted = np.concatenate([learner.predict(x, classes) for x in xs])
    return float(100.0 * np.mean(predicted == y)) if len(y) else float("nan")


def run_seed(run: dict, config: LearnerConfig, scenario, progress=None, task_log=None, prefix_cache=None) -> dict:
    """One seed: train task by task, evaluate after each. Returns R, seen accuracy, counters, time.
    ``task_log(line)``, if given, hears one line per task as it ends."""
    t0 = time.perf_counter()
    learner = make_learner(run, config, prefix_cache=prefix_cache)
    tasks = [scenario.base] + list(scenario.tasks)
    T = len(tasks)
    R = [[None] * T for _ in range(T)]
    seen, counters = [], []
    for t, task in enumerate(tasks):
        if t > 0:
            counters.append(learner.fit_task(task, progress=progress))
        classes = sorted({int(c) for k in tasks[: t + 1] for c in k.classes})
        for i in range(t + 1):
            R[t][i] = _accuracy(learner, [tasks[i].x_test], [tasks[i].y_test], classes)
        seen.append(_accuracy(learner, [k.x_test for k in tasks[: t + 1]], [k.y_test for k in tasks[: t + 1]], classes))
        if task_log and t > 0:
            task_log(f"seed {config.seed}: task {t} of {T - 1} ({task.name}) done after "
                     f"{time.perf_counter() - t0:.1f} s, {counters[-1]['steps']} steps; accuracy on the "
                     f"{len(classes)} classes seen so far {seen[-1]:.1f}%")
    return {"R": R, "seen": seen, "counters": counters, "seconds": time.perf_counter() - t0,
            "settings": learner.settings(), "state_bytes": learner.state_bytes(), "learner": learner}


def total_steps(run: dict, config: LearnerConfig, scenario, seeds) -> int:
    if config.method == "frozen":
        return 0
    per_seed = sum(config.epochs * -(-len(t.y_train) // config.batch_size) for t in scenario.tasks)
    return per_seed * len(seeds)


def simulate(run: dict, config: LearnerConfig, seeds, progress=None, log=None, task_log=None,
             prefix_cache=None) -> dict:
    """Every seed in turn; returns the results.json content (see the README for the schema).
    ``log`` hears one line per seed, ``task_log`` one per task, ``progress()`` one call per step.
    ``prefix_cache``: a ``PrefixCache`` to share (a sweep's, on disk); by default the seeds share one
    in memory. BLAS runs on one thread here: the suffix's matmuls are small, and several threads on a
    busy machine ran them up to 20× slower (measured); parallel seeds and cells are ``zo-edge sweep``'s."""
    from threadpoolctl import threadpool_limits

    from zo_edge.prefix_cache import PrefixCache

    config.check()
    scenario = run.scenario
    prefix_cache = prefix_cache if prefix_cache is not None else PrefixCache()
    t0 = time.perf_counter()
    per_seed = []
    for seed in seeds:
        with threadpool_limits(1, user_api="blas"):
            one = run_seed(run, dataclasses.replace(config, seed=int(seed)), scenario, progress, task_log, prefix_cache)
        per_seed.append(one)
        if log:
            log(f"seed {seed}: average accuracy {metrics.average_accuracy(one['seen']):.1f}%, "
                f"last {one['seen'][-1]:.1f}%, forgetting {metrics.forgetting(one['R']):.1f} "
                f"({one['seconds']:.1f} s)")
    steps = sum(c["steps"] for one in per_seed for c in one["counters"])
    passes = sum(c["forward_passes"] for one in per_seed for c in one["counters"])
    values = {
        "average_accuracy": [metrics.average_accuracy(o["seen"]) for o in per_seed],
        "last_accuracy": [metrics.last_accuracy(o["seen"]) for o in per_seed],
        "forgetting": [metrics.forgetting(o["R"]) for o in per_seed],
        "bwt": [metrics.bwt(o["R"]) for o in per_seed],
    }
    tasks = [scenario.base] + list(scenario.tasks)
    state_bytes = per_seed[0]["state_bytes"]
    return {
        "format": FORMAT,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "run_dir": run.run_dir,
        "settings": {**config.to_json(), **per_seed[0]["settings"], "seeds": [int(s) for s in seeds]},
        "scenario": {"name": scenario.name, "dataset": run.settings["dataset"], "num_classes": scenario.num_classes,
                     "tasks": [{"name": t.name, "classes": [int(c) for c in t.classes],
                                "train_samples": int(len(t.y_train)), "test_samples": int(len(t.y_test))}
                               for t in tasks]},
        "seeds": [int(s) for s in seeds],
        "accuracy_matrices": [metrics.accuracy_matrix_to_json(o["R"]) for o in per_seed],
        "seen_accuracy": [o["seen"] for o in per_seed],
        "metrics": {k: metrics.summarize(v) for k, v in values.items()},
        "counters": {
            "steps_per_seed": steps // max(len(seeds), 1),
            "forward_passes_per_step": passes / steps if steps else 0.0,
            "trainable_state_bytes": int(sum(state_bytes.values())),
            "trainable_state": state_bytes,
            "macs_per_step": (sum(c["macs"] for o in per_seed for c in o["counters"]) / steps) if steps else 0.0,
            "per_seed": [o["counters"] for o in per_seed],
        },
        "wall_time_seconds": {"total": time.perf_counter() - t0, "per_seed": [o["seconds"] for o in per_seed]},
        "_learners": [o["learner"] for o in per_seed],  # not written: the caller saves their state
    }
