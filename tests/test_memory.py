"""The memory estimate (zo_edge.memory) and the arena planner (zo_edge.planner).

The estimate is held to the exported firmware where one exists: the planner's arena is the firmware's
ZOEDGE_ARENA_SIZE for both schedules, zo-fc's trainable state is ``Int8Learner.state_bytes``, and its
train-step statics are what ``firmware_export.train_export`` renders; with arm-none-eabi-gcc, the
model's flash components equal the compiled object's symbol sizes.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
from types import SimpleNamespace

import numpy as np
import pytest

from firmware_export.model_export import render_model
from firmware_export.train_export import export_learner, state_size, train_context
from zo_edge import memory, planner
from zo_edge.build import build_run, load_run
from zo_edge.errors import ZoEdgeError
from zo_edge.learners import LearnerConfig
from zo_edge.learners.int8_learner import Int8Learner
from zo_edge.qgraph import QGraph

RUNS = {"digits-cnn": dict(dataset="digits", epochs=2), "ds-cnn": dict(dataset="spoken-digits", epochs=1)}
CONFIGS = {
    "default": LearnerConfig(),
    "b2q2": LearnerConfig(batch_size=2, q=2),
    "int8-master-no-momentum": LearnerConfig(master="int8", momentum=0.0, q=1),
    "wide-accumulator": LearnerConfig(batch_size=200),  # B * 2^16 * 255 >= 2^31: int64 sums
}


@pytest.fixture(scope="module", params=list(RUNS))
def zoo(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    build_run(root / "run", log=lambda m: None, **RUNS[request.param])
    run = load_run(root / "run")
    graph = run.graph
    return SimpleNamespace(name=request.param, run=run, graph=graph, root=root)


def _arena_size(fw) -> int:
    return int(re.search(r"#define ZOEDGE_ARENA_SIZE (\d+)", (fw / "zoedge_model.h").read_text()).group(1))


def test_arena_equals_the_firmware_for_both_schedules(zoo):
    cfg = LearnerConfig()
    training = render_model(zoo.graph, zoo.run.plan, zoo.root / "fw-train")
    inference = render_model(zoo.graph, zoo.run.plan, zoo.root / "fw-infer", trainable_roles=[])
    zo_fc = memory.estimate(zoo.run, cfg, "zo-fc")
    infer = memory.estimate(zoo.run, cfg, "inference")
    assert zo_fc.ram["activation arena"] == _arena_size(zoo.root / "fw-train") == training.arena.size
    assert infer.ram["activation arena"] == _arena_size(zoo.root / "fw-infer") == inference.arena.size
    assert infer.ram["activation arena"] <= zo_fc.ram["activation arena"]  # the boundary held across suffix runs
    planner.check_plan(training.arena)
    planner.check_plan(planner.plan_arena(zoo.graph))


def _scratch_sizes(fw) -> dict[str, int]:
    """ZOEDGE_SCRATCH_SIZE per instruction set, from the #if chain of the exported zoedge_model.h."""
    text = (fw / "zoedge_model.h").read_text()
    sizes = dict(re.findall(r"ZOEDGE_ISA == ZOEDGE_ISA_(\w+)\n#define ZOEDGE_SCRATCH_SIZE (\d+)", text))
    sizes["REF"] = re.search(r"#else\n#define ZOEDGE_SCRATCH_SIZE (\d+)", text).group(1)
    return {isa.lower(): int(n) for isa, n in sizes.items()}


@pytest.mark.parametrize("isa", ["ref", "dsp", "mve"])
def test_kernel_scratch_is_the_firmware_scratch_after_the_arena(zoo, isa):
    """The estimate's "kernel scratch" is the exported ZOEDGE_SCRATCH_SIZE for that instruction set plus the
    padding that puts it 8-aligned after ZOEDGE_ARENA_SIZE; no scratch, no component."""
    cfg = LearnerConfig()
    for configuration, fw, roles in (("zo-fc", "fw-scratch-train", None), ("inference", "fw-scratch-infer", [])):
        render_model(zoo.graph, zoo.run.plan, zoo.root / fw, trainable_roles=roles)
        scratch, arena = _scratch_sizes(zoo.root / fw), _arena_size(zoo.root / fw)
        assert set(scratch) == {"ref", "dsp", "mve"}
        budget = memory.estimate(zoo.run, cfg, configuration, isa=isa)
        assert budget.ram["activation arena"] == arena
        if scratch[isa]:
            assert budget.ram["kernel scratch"] == scratch[isa] + (-arena % 8), configuration
            assert isa in budget.notes["kernel scratch"]
        else:
            assert "kernel scratch" not in budget.ram
    assert _scratch_sizes(zoo.root / "fw-scratch-train")["dsp"] > 0  # the DSP kernels' im2col is there to count


def test_unknown_instruction_set_is_refused(zoo):
    with pytest.raises(ZoEdgeError, match="unknown instruction set 'neon'"):
        memory.estimate(zoo.run, LearnerConfig(), "inference", isa="neon")


@pytest.mark.parametrize("name", list(CONFIGS))
def test_ram_grows_from_inference_to_zo_fc_to_backprop(zoo, name):
    b = memory.estimate_all(zoo.run, CONFIGS[name])
    assert list(b) == list(memory.CONFIGURATIONS)
    assert b["inference"].ram_bytes < b["zo-fc"].ram_bytes
    if name != "wide-accumulator":
        # not a law: from batch 129 the firmware sums the classifier gradient in int64 (+ an int32 copy),
        # 12 B per classifier value against backprop's 4, which outweighs the rest on digits' wide classifier
        assert b["zo-fc"].ram_bytes < b["fo"].ram_bytes
    for budget in b.values():
        assert all(v > 0 for v in budget.ram.values()) and all(v > 0 for v in budget.flash.values())
        assert set(budget.notes) == set(budget.ram) | set(budget.flash)
        assert all(budget.notes[k] and "\n" not in budget.notes[k] for k in budget.notes)
        assert sorted(n for names in budget.groups.values() for n in names) == sorted(budget.ram)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_zo_fc_overhead_is_trainable_state_plus_train_step_statics(zoo, name):
    cfg = CONFIGS[name]
    infer, zo_fc = memory.estimate(zoo.run, cfg, "inference"), memory.estimate(zoo.run, cfg, "zo-fc")
    learner = Int8Learner(zoo.run, cfg)
    state = zo_fc.group_bytes("trainable state")
    statics = zo_fc.group_bytes("train step")
    assert state == sum(learner.state_bytes().values())
    arena_growth = zo_fc.ram["activation arena"] - infer.ram["activation arena"]
    assert zo_fc.ram_bytes - infer.ram_bytes == arena_growth + state + statics
    # the firmware twin: the model's RAM tensors plus zoedge_train.c's static RAM, item for item
    ctx = train_context(export_learner(zoo.run, cfg))
    model_state = sum(zoo.graph.tensors[zoo.run.roles[r]].size_bytes for r, _ in zoo.run.plan.trainables())
    assert state + statics == model_state + sum(b for _, b in ctx["ram"])
    assert memory.state_blob_bytes(learner) == state_size(learner) == ctx["state_bytes"]
    wide = cfg.batch_size * (1 << 16) * 255 >= 1 << 31
    B, C, n = cfg.batch_size, learner.num_classes, learner.fc.n
    F = n // C - 1
    per_sample = B * (4 * C + F) + (0 if zo_fc.ram["activation arena"] >= 4 * n else 4 * n)
    accumulate = (12 if wide else 4) * n
    layout = ctx["fc"]["layout"]
    assert layout == ("per_sample" if per_sample < accumulate + 4 * C else "accumulate")  # the smaller
    assert zo_fc.ram["classifier gradient accumulators"] == (per_sample if layout == "per_sample" else accumulate)
    assert layout.replace("_", "-") in zo_fc.notes["classifier gradient accumulators"]


def test_persistence_buffer_is_the_state_blob(zoo):
    cfg = LearnerConfig(batch_size=2, q=2)
    plain = memory.estimate(zoo.run, cfg, "zo-fc")
    persisted = memory.estimate(zoo.run, cfg, "zo-fc", persist=True)
    learner = Int8Learner(zoo.run, cfg)
    assert persisted.ram_bytes - plain.ram_bytes == persisted.ram["state save buffer (persistence)"] \
        == state_size(learner)


def test_flash_holds_every_constant_the_kernels_read(zoo):
    g = zoo.graph
    weighted = {t for op in g.ops if op.opcode in memory.WEIGHTED for t in op.inputs[1:3] if t >= 0}
    for configuration in memory.CONFIGURATIONS:
        b = memory.estimate(zoo.run, LearnerConfig(), configuration)
        assert b.flash["weights and parameters"] >= sum(g.tensors[t].size_bytes for t in weighted)
        assert b.flash_bytes >= sum(t.size_bytes for t in g.tensors if t.is_constant)
        assert b.flash["weights and parameters"] == memory.estimate(zoo.run, LearnerConfig(), "inference").flash[
            "weights and parameters"]  # trainable tensors keep their initial values in flash


def test_model_flash_matches_the_compiled_firmware(zoo):
    """weights, layer parameters and schedule tables = the symbol sizes of zoedge_model.o for Cortex-M4."""
    if shutil.which("arm-none-eabi-gcc") is None:
        pytest.skip("arm-none-eabi-gcc not installed")
    fw = zoo.root / "fw-size"
    render_model(zoo.graph, zoo.run.plan, fw)
    obj = fw / "zoedge_model.o"
    subprocess.run(["arm-none-eabi-gcc", "-std=c99", "-O2", "-mcpu=cortex-m4", "-mthumb", "-c", "-o", str(obj),
                    str(fw / "zoedge_model.c")], check=True, capture_output=True)
    sizes = {}
    for line in subprocess.run(["arm-none-eabi-nm", "-S", "-t", "d", str(obj)], check=True, capture_output=True,
                               text=True).stdout.splitlines():
        parts = line.split()
        if len(parts) == 4:
            sizes[parts[3]] = int(parts[1])
    weights = sum(v for k, v in sizes.items() if re.fullmatch(r"zoedge_t\d+|zoedge_\w+_init", k))
    layers = sum(v for k, v in sizes.items() if re.fullmatch(r"zoedge_op\d+(_multiplier|_shift)?", k))
    b = memory.estimate(zoo.run, LearnerConfig(), "zo-fc")
    assert b.flash["weights and parameters"] == weights
    assert b.flash["layer parameters"] == layers
    assert b.flash["schedule tables"] == sizes["zoedge_tensor_offset"] + sizes["zoedge_op_in_prefix"]


def test_fo_holds_the_activations_its_backward_pass_reads(zoo):
    from zo_edge.engine import Engine

    roles = zoo.run.roles
    bp = memory.backward_plan(zoo.graph, Engine(zoo.graph), [roles[r] for r, _ in zoo.run.plan.trainables()])
    root = planner.arena_roots(zoo.graph)
    for role in ("adapter0.cut", "adapter0.hidden", "classifier.input"):  # inputs of trained layers
        assert root[roles[role]] in bp.saved
    assert bp.backward_ops[0] == zoo.graph.producer(roles["logits"]).index
    assert bp.full >= bp.gradients >= bp.forward == planner.plan_arena(zoo.graph).size
    b = memory.estimate(zoo.run, LearnerConfig(), "fo")
    arena = (b.group_bytes("activations") - b.ram.get("kernel scratch", 0) + b.ram.get("activation gradients (float32)", 0)
             + b.ram.get("backprop activations", 0))
    assert arena == bp.full  # the kernels' scratch lies after the arena, as in the forward firmware
    n = sum(int(np.prod(zoo.graph.tensors[roles[r]].shape)) for r, _ in zoo.run.plan.trainables())
    assert b.ram["master copies (float32)"] == b.ram["gradient accumulators (float32)"] == b.ram["momentum"] == 4 * n


def test_json_round_trip_and_measured_code(zoo):
    for configuration in memory.CONFIGURATIONS:
        b = memory.estimate(zoo.run, LearnerConfig(), configuration)
        data = json.loads(json.dumps(b.to_json()))
        assert set(data) >= {"configuration", "ram_bytes", "flash_bytes", "components", "notes"}
        assert data["ram_bytes"] == sum(data["components"]["ram"].values())
        assert memory.Budget.from_json(data) == b
    measured = memory.estimate(zoo.run, LearnerConfig(), "zo-fc", code_bytes={"target": "cortex-m4", "bytes": 9000})
    assert measured.flash["code (measured cortex-m4)"] == 9000 and "code (estimate)" not in measured.flash


def test_bad_configuration_and_a_broken_plan(zoo, tmp_path):
    with pytest.raises(ZoEdgeError, match="unknown configuration 'train'; choose one of inference, zo-fc, fo"):
        memory.estimate(zoo.run, LearnerConfig(), "train")
    bad = tmp_path / "run"
    shutil.copytree(zoo.root / "run", bad)
    meta = json.loads((bad / "run.json").read_text())
    meta["plan"]["adapters"][0]["up_bias"] = 10_000
    (bad / "run.json").write_text(json.dumps(meta))
    with pytest.raises(ZoEdgeError, match="adapter0.up.bias points at tensor 10000"):  # caught on reading
        load_run(bad)


# -- the planner on hand-made graphs ----------------------------------------------------------------------
def _graph(sizes: dict, ops: list, inputs=(0,), outputs=None):
    """A stand-in QGraph: tensors of the given byte sizes (int8), ops (opcode, inputs, outputs)."""
    tensors = {t: SimpleNamespace(size_bytes=n, dtype=np.int8) for t, n in sizes.items()}
    qops = [SimpleNamespace(index=i, opcode=o, inputs=list(a), outputs=list(b)) for i, (o, a, b) in enumerate(ops)]
    last = ops[-1][2]
    return SimpleNamespace(tensors=tensors, ops=qops, inputs=list(inputs), outputs=list(outputs or last))


def _overlap(plan, a, b) -> bool:
    return plan.offsets[a] < plan.offsets[b] + plan.nbytes[b] and plan.offsets[b] < plan.offsets[a] + plan.nbytes[a]


def test_planner_separates_live_tensors_and_reuses_dead_ones():
    # 0 -> A -> 1 -> B -> 2 -> C -> 3: each op's input and output are alive together, 0 is dead after A
    g = _graph({0: 100, 1: 60, 2: 100, 3: 10}, [("CONV_2D", [0], [1]), ("CONV_2D", [1], [2]), ("CONV_2D", [2], [3])])
    plan = planner.plan_arena(g)
    planner.check_plan(plan)
    assert not _overlap(plan, 0, 1) and not _overlap(plan, 1, 2) and not _overlap(plan, 2, 3)
    assert plan.offsets[2] == plan.offsets[0] == 0  # 2 reuses 0's bytes
    assert plan.size == 160  # the largest pair alive together, aligned
    assert plan.lifetimes[0] == {0: (0, 0), 1: (0, 1), 2: (1, 2), 3: (2, 2)}


def test_planner_keep_alive_and_two_schedules():
    g = _graph({0: 100, 1: 60, 2: 100, 3: 10}, [("CONV_2D", [0], [1]), ("CONV_2D", [1], [2]), ("CONV_2D", [2], [3])])
    kept = planner.plan_arena(g, keep_alive={0})
    planner.check_plan(kept)
    assert not _overlap(kept, 0, 2) and kept.size == 260
    # a skip connection: 0 read again by the last op, which makes every tensor overlap it
    skip = _graph({0: 40, 1: 40, 2: 40, 3: 40}, [("CONV_2D", [0], [1]), ("CONV_2D", [1], [2]), ("ADD", [2, 0], [3])])
    plan = planner.plan_arena(skip)
    planner.check_plan(plan)
    assert plan.size == 120
    # a second schedule (C before B) makes 1 and 3 alive together, which graph order alone does not
    two = planner.plan_arena(g, schedules=[[0, 1, 2], [0, 2, 1]])
    planner.check_plan(two)
    assert not _overlap(two, 1, 3)


def test_planner_aliases_reshape_and_skips_shape_plumbing():
    g = _graph({0: 64, 1: 64, 2: 4, 3: 64, 4: 8},
               [("CONV_2D", [0], [1]), ("SHAPE", [1], [2]), ("RESHAPE", [1, 2], [3]), ("FULLY_CONNECTED", [3], [4])])
    plan = planner.plan_arena(g)
    assert plan.root[3] == 1 and plan.offsets[3] == plan.offsets[1]
    assert 2 not in plan.offsets  # the computed shape needs no arena memory
    assert plan.lifetimes[0][1] == (0, 3)  # the reshaped view keeps its buffer alive until the FC reads it
    planner.check_plan(plan)


def test_place_aligns_and_orders_largest_first():
    size, offsets = planner.place({"a": 3, "b": 5, "c": 2}, [{"a": (0, 1), "b": (0, 1), "c": (1, 2)}])
    assert offsets == {"b": 0, "a": 8, "c": 12} and size == 16
    assert planner.place({}, [{}]) == (0, {})


def test_config_method_is_the_configuration(zoo):
    """zo-fc is the device learner whatever method the config names; fo ignores q."""
    base = memory.estimate(zoo.run, LearnerConfig(), "zo-fc")
    assert memory.estimate(zoo.run, LearnerConfig(method="head", mode="float"), "zo-fc") == base
    fo = memory.estimate(zoo.run, LearnerConfig(), "fo")
    assert memory.estimate(zoo.run, dataclasses.replace(LearnerConfig(), q=16), "fo") == fo
