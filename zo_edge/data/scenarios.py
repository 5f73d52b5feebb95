"""Continual-learning scenarios: one way to cut any Dataset into a pretraining task and a stream.

* class-il: the classes arrive in groups. Either seeded (``base_classes`` first, then
  ``classes_per_task`` at a time, in a class order drawn from the seed) or explicit (``tasks``: a list
  of class lists, or the string ``"0,1,2,3;4,5;6,7"``; the first group is the base task).
* domain-il: every class throughout; task d is the samples of domain d (``domain_train``/``domain_test``),
  domain 0 being the base task. The bundled sets get their domains from ``with_synthetic_domains``.

Labels always stay in the dataset's label space (class k is label k), so one classifier with
``num_classes`` outputs serves the whole stream; ``Scenario.class_order`` records the order in which
classes arrive.
"""

from __future__ import annotations

import copy
import functools
import re
from dataclasses import dataclass

import numpy as np

from zo_edge.data.bundled import DATASETS, DOMAIN_SHIFT_DATASETS, load_dataset, with_synthetic_domains
from zo_edge.data.dataset import Dataset, check_seed, source_of
from zo_edge.errors import ZoEdgeError

SCENARIOS: dict[str, str] = {
    "class-il": "class-incremental: pretrain on a few base classes, then learn the remaining "
    "classes a few at a time",
    "domain-il": "domain-incremental: all classes throughout; each task sees them under a new "
    "recording or imaging condition",
}
DEFAULT_BASE_CLASSES = 4
DEFAULT_CLASSES_PER_TASK = 2


@dataclass
class Task:
    index: int  # -1 for the pretraining (base) task, then 0, 1, ... in stream order
    name: str
    classes: list[int]  # labels allowed in this task, in the dataset's label space
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


@dataclass
class Scenario:
    name: str  # "class-il" | "domain-il"
    dataset: str
    base: Task
    tasks: list[Task]
    class_order: list[int]  # the order classes arrive in; base classes first
    num_classes: int  # outputs the classifier must hold over the whole stream
    meta: dict

    @property
    def stream(self) -> list[Task]:
        """The base task, then the tasks learned on the device."""
        return [self.base, *self.tasks]


def make_scenario(dataset: Dataset, kind: str, seed: int = 0, base_classes=None, classes_per_task=None,
                  tasks=None, shifts=None) -> Scenario:
    """Cut a dataset into a pretraining task and a stream of on-device tasks.

    class-il, seeded: a class order drawn from ``seed``; the first ``base_classes`` (default 4) form the
    base task, then each task adds ``classes_per_task`` (default 2) until every class is used; the last
    task may be shorter (10 classes, 4 base, 4 per task -> tasks of 4 and 2).
    class-il, explicit: ``tasks`` (class lists or a ``parse_tasks`` string); the first group is the base
    and needs two classes, at least one task must follow, no class may appear twice. Classes left out
    never arrive (the classifier still holds every class).
    domain-il: every class in every task, one task per domain; ``seed`` only matters for the bundled
    sets, whose domains it draws (``with_synthetic_domains``; ``shifts`` chooses the set of shifts,
    "mild" by default or "strong"). ``base_classes`` and ``classes_per_task`` do not apply.
    """
    if kind not in SCENARIOS:
        raise ZoEdgeError(f"unknown scenario {kind!r}; choose one of: {', '.join(SCENARIOS)}")
    check_seed(seed)
    if kind == "domain-il":
        if tasks is not None:
            raise ZoEdgeError("tasks apply to class-il only; a domain-il stream has one task per domain "
                              "(domain_train/domain_test)")
        return _domain_incremental(dataset, seed, shifts)
    if shifts is not None:
        raise ZoEdgeError(f"shifts choose the synthetic domains of a domain-il stream; a {kind} stream has none")
    if tasks is None:
        base_classes = DEFAULT_BASE_CLASSES if base_classes is None else base_classes
        classes_per_task = DEFAULT_CLASSES_PER_TASK if classes_per_task is None else classes_per_task
        return _seeded_class_incremental(dataset, seed, base_classes, classes_per_task)
    if base_classes is not None or classes_per_task is not None:
        raise ZoEdgeError("give either tasks or base_classes/classes_per_task, not both: explicit tasks "
                          "already say which classes come when")
    groups = _checked_tasks(dataset, parse_tasks(tasks) if isinstance(tasks, str) else tasks)
    return _class_incremental(dataset, seed, groups, {"explicit_tasks": groups})


def parse_tasks(text: str) -> list[list[int]]:
    """``"0,1,2,3;4,5;6,7"`` -> ``[[0, 1, 2, 3], [4, 5], [6, 7]]``: groups split by ``;``, classes by ``,``."""
    if not isinstance(text, str) or not text.strip():
        raise ZoEdgeError(f"tasks {text!r} is empty; give class groups such as '0,1,2,3;4,5;6,7' (the first "
                          f"group is the base task)")
    groups = []
    for number, group in enumerate(text.split(";"), 1):
        if not group.strip():
            raise ZoEdgeError(f"tasks {text!r}: group {number} is empty; separate groups with one ';', "
                              f"classes with ',' (e.g. '0,1,2,3;4,5;6,7')")
        classes = []
        for token in group.split(","):
            if not re.fullmatch(r"\s*\d+\s*", token):
                raise ZoEdgeError(f"tasks {text!r}: {token.strip()!r} in group {number} is not a class index "
                                  f"(a whole number from 0); e.g. '0,1,2,3;4,5;6,7'")
            classes.append(int(token))
        groups.append(classes)
    return groups


def seen_classes(scenario: Scenario, t: int) -> list[int]:
    """Classes learned once task ``t`` is done: base classes plus those of tasks 0..t (t=-1: base only)."""
    if not -1 <= t < len(scenario.tasks):
        raise ZoEdgeError(f"task index t={t} is outside this scenario; choose -1 (base) to "
                          f"{len(scenario.tasks) - 1}")
    seen = set(scenario.base.classes)
    for task in scenario.tasks[: t + 1]:
        seen.update(task.classes)
    return sorted(seen)


def tasks_text(groups: list[list[int]]) -> str:
    """The ``parse_tasks`` form of class groups."""
    return ";".join(",".join(str(c) for c in group) for group in groups)


# ---------------------------------------------------------------------------------------------------
# Class-incremental


def _seeded_class_incremental(dataset: Dataset, seed: int, base_classes, classes_per_task) -> Scenario:
    n = dataset.num_classes
    for name, value in (("base_classes", base_classes), ("classes_per_task", classes_per_task)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ZoEdgeError(f"{name}={value!r} must be a whole number of classes")
    # Pretraining on a single class teaches a classifier nothing, and at least one class must be
    # left for the device to learn.
    if not 2 <= base_classes <= n - 1:
        raise ZoEdgeError(f"base_classes={base_classes} must be between 2 and {n - 1} for {n} classes "
                          f"(pretraining needs two classes, the device at least one new one)")
    if not 1 <= classes_per_task <= n - base_classes:
        raise ZoEdgeError(f"classes_per_task={classes_per_task} must be between 1 and {n - base_classes} "
                          f"(the classes left after base_classes={base_classes})")
    order = [int(c) for c in np.random.default_rng(seed).permutation(n)]
    later = range(base_classes, n, classes_per_task)
    groups = [order[:base_classes]] + [order[i : i + classes_per_task] for i in later]
    return _class_incremental(dataset, seed, groups,
                              {"base_classes": int(base_classes), "classes_per_task": int(classes_per_task)})


def _checked_tasks(dataset: Dataset, tasks) -> list[list[int]]:
    try:
        groups = [list(group) for group in tasks]
    except TypeError:
        raise ZoEdgeError(f"tasks={tasks!r} must be class lists such as [[0, 1, 2, 3], [4, 5]] or the string "
                          f"'0,1,2,3;4,5'") from None
    if not groups:
        raise ZoEdgeError("tasks is empty; give class groups such as [[0, 1, 2, 3], [4, 5]] (the first group is "
                          "the base task)")
    shown = f"tasks {tasks_text(groups)!r}"
    n = dataset.num_classes
    arrived: dict[int, str] = {}
    for number, group in enumerate(groups, 1):
        where = "the base task (group 1)" if number == 1 else f"group {number}"
        if not group:
            raise ZoEdgeError(f"{shown}: {where} is empty; give it at least one class")
        for c in group:
            if isinstance(c, bool) or not isinstance(c, (int, np.integer)):
                raise ZoEdgeError(f"{shown}: {c!r} in {where} is not a class index (a whole number)")
            if not 0 <= c < n:
                raise ZoEdgeError(f"{shown}: class {c} in {where} is not a class of {dataset.name!r}, which "
                                  f"has classes 0..{n - 1}")
            if int(c) in arrived:
                raise ZoEdgeError(f"{shown}: class {c} is in {arrived[int(c)]} and in {where}; each class "
                                  f"arrives once")
            arrived[int(c)] = where
    if len(groups[0]) < 2:
        raise ZoEdgeError(f"{shown}: the base task (group 1) holds one class; pretraining needs at least two")
    if len(groups) < 2:
        raise ZoEdgeError(f"{shown}: only a base task; add at least one group for the device to learn, "
                          f"after a ';'")
    return [[int(c) for c in group] for group in groups]


def _class_incremental(dataset: Dataset, seed: int, groups: list[list[int]], settings: dict) -> Scenario:
    for split, labels in (("y_train", dataset.y_train), ("y_test", dataset.y_test)):
        present = set(np.unique(labels).tolist())
        for number, group in enumerate(groups, 1):
            missing = [c for c in group if c not in present]
            if missing:
                raise ZoEdgeError(f"{source_of(dataset)}: class {missing[0]} of task group {number} has no "
                                  f"samples in {split}; every class of a task needs training and test samples")
    base = _task_of_classes(dataset, -1, sorted(groups[0]))
    tasks = [_task_of_classes(dataset, index, sorted(group)) for index, group in enumerate(groups[1:])]
    class_order = [c for group in groups for c in group]
    unused = sorted(set(range(dataset.num_classes)) - set(class_order))
    if unused:
        settings = {**settings, "unused_classes": unused}
    return _scenario("class-il", dataset, seed, base, tasks, class_order, settings)


def _task_of_classes(dataset: Dataset, index: int, classes: list[int]) -> Task:
    train = np.isin(dataset.y_train, classes)
    test = np.isin(dataset.y_test, classes)
    label = ",".join(str(c) for c in classes)
    return Task(index=index, name=f"base: classes {label}" if index < 0 else f"classes {label}",
                classes=classes, x_train=dataset.x_train[train], y_train=dataset.y_train[train],
                x_test=dataset.x_test[test], y_test=dataset.y_test[test])


# ---------------------------------------------------------------------------------------------------
# Domain-incremental


def _domain_incremental(dataset: Dataset, seed: int, shifts=None) -> Scenario:
    if dataset.domain_names is None:
        if dataset.meta.get("origin") != "bundled":
            raise ZoEdgeError(f"{source_of(dataset)} has no domain arrays, so it cannot make a domain-il stream: "
                              f"add domain_train and domain_test (the domain of each sample, 0 = base), or use "
                              f"class-il; the bundled sets ({', '.join(DATASETS)}) have domain-il streams built in")
        dataset = with_synthetic_domains(dataset, seed, shifts or "mild")
    elif shifts is not None:
        raise ZoEdgeError(f"{source_of(dataset)} has its own domain arrays; shifts choose the synthetic domains of "
                          f"the bundled sets only")
    if dataset.num_domains < 2:
        raise ZoEdgeError(f"{source_of(dataset)}: domain_train and domain_test hold only domain 0; a domain-il "
                          f"stream needs the base domain 0 and at least one more")
    every_class = list(range(dataset.num_classes))
    parts = []
    for d, name in enumerate(dataset.domain_names):
        train, test = dataset.domain_train == d, dataset.domain_test == d
        parts.append(Task(index=d - 1, name=f"base: {name}" if d == 0 else name, classes=every_class,
                          x_train=dataset.x_train[train], y_train=dataset.y_train[train],
                          x_test=dataset.x_test[test], y_test=dataset.y_test[test]))
    synthetic = dataset.meta.get("synthetic_domains", {})
    settings = {"domains": list(dataset.domain_names),
                **{key: synthetic[key] for key in ("train_split", "shift_set", "shifts") if key in synthetic}}
    # Order does not matter here: every class is there from the start.
    return _scenario("domain-il", dataset, seed, parts[0], parts[1:], every_class, settings)


def _scenario(kind: str, dataset: Dataset, seed: int, base: Task, tasks: list[Task],
              class_order: list[int], settings: dict) -> Scenario:
    def sizes(task: Task) -> dict:
        return {"index": task.index, "name": task.name, "classes": list(task.classes),
                "train": len(task.y_train), "test": len(task.y_test)}

    meta = {"scenario": kind, "dataset": dataset.name, "dataset_seed": dataset.meta.get("seed"),
            "seed": int(seed), **settings, "class_order": list(class_order),
            "num_classes": dataset.num_classes, "base": sizes(base), "tasks": [sizes(t) for t in tasks]}
    return Scenario(name=kind, dataset=dataset.name, base=base, tasks=tasks, class_order=list(class_order),
                    num_classes=dataset.num_classes, meta=meta)


# ---------------------------------------------------------------------------------------------------
# Catalogue


def catalogue() -> list[dict]:
    """One row per (bundled dataset, scenario) with default settings and sizes, for ``zo-edge data list``."""
    return copy.deepcopy(_catalogue_rows())


@functools.lru_cache(maxsize=None)
def _catalogue_rows() -> tuple[dict, ...]:
    rows = []
    for dataset_name, dataset_description in DATASETS.items():
        dataset = load_dataset(dataset_name)
        for kind, scenario_description in SCENARIOS.items():
            if kind == "domain-il" and dataset_name not in DOMAIN_SHIFT_DATASETS:
                continue  # no synthetic domains for it
            scenario = make_scenario(dataset, kind)
            rows.append({
                "dataset": dataset_name,
                "scenario": kind,
                "dataset_description": dataset_description,
                "scenario_description": scenario_description,
                "input_shape": list(dataset.input_shape),
                "num_classes": scenario.num_classes,
                "train": len(dataset.y_train),
                "test": len(dataset.y_test),
                "base_classes": len(scenario.base.classes),
                "base_train": len(scenario.base.y_train),
                "tasks": len(scenario.tasks),
                "task_names": [t.name for t in scenario.tasks],
                "task_train": [len(t.y_train) for t in scenario.tasks],
                "task_test": [len(t.y_test) for t in scenario.tasks],
            })
    return tuple(rows)
