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

from sim import flatness, metrics
from zo_edge.errors import ZoEdgeError
from zo_edge.learners import LearnerConfig, make_learner

FORMAT = "zo-edge/results@1"


def _accuracy(learner, xs, ys, classes) -> float:
    """Accuracy (%) over several test sets together. Each set is predicted on its own (a prediction is
    per sample), so its frozen prefix is the one cached for that set, not a new concatenation's."""
    y = np.concatenate(ys)
    predicted = np.concatenate([learner.predict(x, classes) for x in xs])
    return float(100.0 * np.mean(predicted == y)) if len(y) else float("nan")


@dataclasses.dataclass(frozen=True)
class Flatness:
    """The flatness measurement after each task (``sim.flatness``): its size, directions and sample cap."""

    rho: float = flatness.RHO
    directions: int = flatness.DIRECTIONS
    samples: int = flatness.SAMPLES

    def to_json(self) -> dict:
        return {**dataclasses.asdict(self), "norms": list(flatness.NORMS),
                "loss": "cross-entropy over the classes seen so far, on old tasks' test samples",
                "model": "the float model at the learner's values (an int8 learner's dequantised)"}


def _measure_flatness(learner, split, tasks, t: int, classes, spec: Flatness, seed: int) -> dict:
    """The loss rise on tasks 0..t-1's test data after task t (``sim.flatness.loss_rise``)."""
    x = np.concatenate([k.x_test for k in tasks[:t]])
    y = np.concatenate([k.y_test for k in tasks[:t]])
    rng = np.random.default_rng([seed, t])
    pick = np.sort(rng.permutation(len(y))[: spec.samples])
    return flatness.loss_rise(split, learner.keras_parameters(), x[pick], y[pick], classes, rho=spec.rho,
                              count=spec.directions, rng=rng, train_bias=learner.run.plan.classifier.kind != "cosine")


def run_seed(run: dict, config: LearnerConfig, scenario, progress=None, task_log=None, prefix_cache=None,
             flat: Flatness | None = None, split=None) -> dict:
    """One seed: train task by task, evaluate after each. Returns R, seen accuracy, counters, the
    measurements per task (update norms, drift, and with ``flat`` the flatness, measured on ``split``,
    the run's float model), time. ``task_log(line)``, if given, hears one line per task as it ends."""
    t0 = time.perf_counter()
    learner = make_learner(run, config, prefix_cache=prefix_cache)
    tasks = [scenario.base] + list(scenario.tasks)
    T = len(tasks)
    R = [[None] * T for _ in range(T)]
    seen, counters, measured = [], [], []
    for t, task in enumerate(tasks):
        if t > 0:
            counters.append(learner.fit_task(task, progress=progress))
        classes = sorted({int(c) for k in tasks[: t + 1] for c in k.classes})
        for i in range(t + 1):
            R[t][i] = _accuracy(learner, [tasks[i].x_test], [tasks[i].y_test], classes)
        seen.append(_accuracy(learner, [k.x_test for k in tasks[: t + 1]], [k.y_test for k in tasks[: t + 1]], classes))
        if t > 0:
            one = {"task": t, **{key: counters[-1].pop(key) for key in ("drift", "update_norms")
                                 if key in counters[-1]}}
            if flat is not None and split is not None:
                one["flatness"] = _measure_flatness(learner, split, tasks, t, classes, flat, config.seed)
            measured.append(one)
        if task_log and t > 0:
            task_log(f"seed {config.seed}: task {t} of {T - 1} ({task.name}) done after "
                     f"{time.perf_counter() - t0:.1f} s, {counters[-1]['steps']} steps; accuracy on the "
                     f"{len(classes)} classes seen so far {seen[-1]:.1f}%")
    return {"R": R, "seen": seen, "counters": counters, "measurements": measured,
            "seconds": time.perf_counter() - t0, "settings": learner.settings(), "state_bytes": learner.state_bytes(),
            "learner": learner}


def total_steps(run: dict, config: LearnerConfig, scenario, seeds) -> int:
    if config.method == "frozen":
        return 0
    per_seed = sum(config.epochs * -(-len(t.y_train) // config.batch_size) for t in scenario.tasks)
    return per_seed * len(seeds)


def simulate(run: dict, config: LearnerConfig, seeds, progress=None, log=None, task_log=None,
             prefix_cache=None, flat: Flatness | None = None) -> dict:
    """Every seed in turn; returns the results.json content (see the README for the schema).
    ``log`` hears one line per seed, ``task_log`` one per task, ``progress()`` one call per step.
    ``prefix_cache``: a ``PrefixCache`` to share (a sweep's, on disk); by default the seeds share one
    in memory. ``flat``: measure the flatness after every task (needs the run's float model). BLAS runs
    on one thread here: the suffix's matmuls are small, and several threads on a busy machine ran them
    up to 20x slower (measured); parallel seeds and cells are ``zo-edge sweep``'s."""
    from threadpoolctl import threadpool_limits

    from zo_edge.prefix_cache import PrefixCache

    config.check()
    scenario = run.scenario
    prefix_cache = prefix_cache if prefix_cache is not None else PrefixCache()
    t0 = time.perf_counter()
    split = None
    if flat is not None:
        if not run.has_keras:
            raise ZoEdgeError(f"{run.run_dir} has no float model (it was built from a .tflite); the flatness measure "
                              "evaluates the float model — leave out --flatness")
        from zo_edge.learners.float_learner import keras_split_of

        split = keras_split_of(run)
    per_seed = []
    for seed in seeds:
        with threadpool_limits(1, user_api="blas"):
            one = run_seed(run, dataclasses.replace(config, seed=int(seed)), scenario, progress, task_log, prefix_cache,
                           flat, split)
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
        "measurements": measurement_summary([o["measurements"] for o in per_seed], flat),
        "wall_time_seconds": {"total": time.perf_counter() - t0, "per_seed": [o["seconds"] for o in per_seed]},
        "_learners": [o["learner"] for o in per_seed],  # not written: the caller saves their state
    }


def measurement_summary(per_seed: list[list[dict]], flat: Flatness | None) -> dict:
    """results.json's ``measurements``: per seed and task as measured, and per quantity the mean over tasks
    summarised over seeds ({mean, std, per_seed}, as the metrics): ``update_norm_<part>`` (mean L2 norm of a
    step's update), ``drift_<part>`` (L2 norm of end minus start of a task), ``loss_rise_<norm>`` and
    ``loss_rise_symmetric_<norm>`` (the flatness measure's mean rise, one-sided and antithetic)."""
    def per_task_mean(get) -> list[float]:
        values = []
        for tasks in per_seed:
            got = [v for v in (get(t) for t in tasks) if v is not None]
            values.append(float(np.mean(got)) if got else float("nan"))
        return values

    summary = {}
    for part in ("adapters", "classifier"):
        summary[f"update_norm_{part}"] = per_task_mean(lambda t: t.get("update_norms", {}).get(part, {}).get("mean"))
        summary[f"drift_{part}"] = per_task_mean(lambda t: t.get("drift", {}).get(part))
    if flat is not None:
        for norm in flatness.NORMS:
            for key, name in (("mean", "loss_rise"), ("symmetric_mean", "loss_rise_symmetric")):
                summary[f"{name}_{norm}"] = per_task_mean(lambda t: t.get("flatness", {}).get(norm, {}).get(key))
    return {"flatness": flat.to_json() if flat is not None else None, "per_seed": per_seed,
            "summary": {k: metrics.summarize(v) for k, v in summary.items() if not all(np.isnan(v))}}
