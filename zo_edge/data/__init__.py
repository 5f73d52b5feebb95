"""Data sets and continual-learning scenarios: a data set is arrays plus metadata.

The bundled sets and a user's ``.npz`` are two instances of one mechanism (every Dataset passes
``dataset_from_arrays``' checks), and scenarios are cut from either the same way.

The npz format (``load_npz`` reads it, ``save_npz`` writes it; read with ``allow_pickle=False``)::

    x_train, x_test    float32 (or any real/integer type) [samples, *input_shape], finite
    y_train, y_test    integer class indices 0..C-1 (whole-number floats accepted); every class needs
                       training and test samples
    class_names        optional, C strings; then C = len(class_names), else C = largest label + 1
    domain_train,      optional, both or neither: the domain (task) of each sample for domain-il,
    domain_test        0 = base, 1.. = the stream; every domain needs training and test samples
    domain_names       optional, one string per domain

Bad data gives one ``ZoEdgeError`` line naming the file, the array, the problem and the fix.

API (all in ``zo_edge.data``)::

    load_dataset(name, seed=0, test_fraction=0.2, frames=32) -> Dataset   bundled: DATASETS
    load_npz(path) -> Dataset                       meta: origin, path, sha256, bytes, sizes, class counts
    save_npz(dataset, path) -> sha256               same format; same data -> same bytes
    dataset_from_arrays(x_train, y_train, x_test, y_test, *, name, class_names=None,
                        domain_train=None, domain_test=None, domain_names=None, meta=None) -> Dataset
    check_input_shape(dataset, shape) -> Dataset    shape without batch axis (None = any); adds/removes
                                                    trailing size-1 axes itself (meta["reshaped"]),
                                                    otherwise one line with a hint
    describe_dataset(dataset) -> dict               sizes, classes with counts, domains, input shape,
    format_description(summary) -> str              value range; the text `zo-edge data check` prints

    make_scenario(dataset, kind, seed=0, base_classes=None, classes_per_task=None, tasks=None)
        kind "class-il": seeded (base_classes=4, classes_per_task=2 by default) or explicit tasks
            ([[0, 1, 2, 3], [4, 5]] or "0,1,2,3;4,5"; first group = base task)
        kind "domain-il": one task per domain of domain_train/domain_test (bundled sets: synthetic
            shifts, see with_synthetic_domains)
    parse_tasks("0,1,2,3;4,5;6,7") -> [[0, 1, 2, 3], [4, 5], [6, 7]]
    seen_classes(scenario, t), Scenario.stream (base task, then the stream), catalogue()

    data_spec(dataset, scenario, store_in=None) -> dict     JSON for run.json; store_in=RUN_DIR copies a
                                                            user's data to RUN_DIR/data.npz
    load_spec(spec, root=RUN_DIR) -> (Dataset, Scenario)    the same tasks, checked by fingerprint
    spec_from_settings(run["settings"]) -> spec             run folders written before specs
    dataset_spec / dataset_from_spec / scenario_spec / scenario_from_spec   the two halves

A build from a user's file, then, is::

    dataset = check_input_shape(load_npz(path), model_input_shape)
    scenario = make_scenario(dataset, "class-il", seed, tasks=parse_tasks(text))  # or base_classes=...
    run["data"] = data_spec(dataset, scenario, store_in=staging_folder)
    ...
    dataset, scenario = load_spec(run.get("data") or spec_from_settings(run["settings"]), run_dir)
"""

from zo_edge.data.bundled import (
    DATASETS,
    DOMAIN_SHIFT_DATASETS,
    SHIFT_SETS,
    DIGIT_NAMES,
    MFCC_CLIP,
    MFCC_COEFFICIENTS,
    load_dataset,
    with_synthetic_domains,
)
from zo_edge.data.dataset import (
    Dataset,
    check_input_shape,
    dataset_from_arrays,
    describe_dataset,
    format_description,
)
from zo_edge.data.npz import load_npz, save_npz
from zo_edge.data.scenarios import (
    SCENARIOS,
    Scenario,
    Task,
    catalogue,
    make_scenario,
    parse_tasks,
    seen_classes,
    tasks_text,
)
from zo_edge.data.spec import (
    SPEC_FORMAT,
    data_spec,
    dataset_from_spec,
    dataset_spec,
    load_spec,
    scenario_fingerprint,
    scenario_from_spec,
    scenario_spec,
    spec_from_settings,
)

__all__ = [
    "DATASETS", "DOMAIN_SHIFT_DATASETS", "SHIFT_SETS", "DIGIT_NAMES", "MFCC_CLIP", "MFCC_COEFFICIENTS", "SCENARIOS", "SPEC_FORMAT", "Dataset",
    "Scenario", "Task", "catalogue", "check_input_shape", "data_spec", "dataset_from_arrays",
    "dataset_from_spec", "dataset_spec", "describe_dataset", "format_description", "load_dataset",
    "load_npz", "load_spec", "make_scenario", "parse_tasks", "save_npz", "scenario_fingerprint",
    "scenario_from_spec", "scenario_spec", "seen_classes", "spec_from_settings", "tasks_text",
    "with_synthetic_domains",
]
