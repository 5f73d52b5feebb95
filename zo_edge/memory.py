"""RAM and flash budgets of one model in three configurations, computed from the graph and the learner config.

``estimate(run, config, configuration)`` → ``Budget``: bytes per component, each with a one-line note
saying how it was computed. Nothing is guessed from model size: every figure comes from the QGraph's
tensor shapes and dtypes, the arena planner (``zo_edge.planner``, the same plan the firmware renders),
the learner's stored state (``Int8Learner.state_bytes``) and the layout of the exported C (the templates
in ``firmware_export/templates``, mirrored here without importing ``firmware_export``). Two figures are
documented estimates rather than counts: the stack (``STACK_BYTES``) and, unless a measured size is
given, the code (``CODE_BYTES``).

Configurations (``CONFIGURATIONS``):

* ``inference`` — the int8 graph in graph order: an arena planned without keep-alive, the model's
  constants in flash, one input and one logits buffer for the application.
* ``zo-fc`` — the exported firmware (device mode, int8): its arena (prefix/suffix schedules, boundary
  tensors kept alive), the trainable tensors in RAM, the learner's masters and momentum at their
  stored precision, and the static buffers of ``zoedge_train.c`` (accumulators, loss sums, flags).
  The learner config's q, batch size, master precision and momentum are used; its method is taken as
  zo-fc (the configuration's name) and its mode as int8.
* ``fo`` — first-order backprop through the adapter and the classifier as a device would run it: per
  sample, the int8 forward pass, then a backward pass over the ops the trainable tensors reach, with
  float32 activation gradients materialised layer by layer (in place through ADD and RESHAPE), the
  forward activations the backward pass reads kept alive until it reads them, all planned together
  with the same greedy planner; float32 masters, gradient accumulators (summed over the batch) and
  momentum for every trainable value; the int8 weights the forward pass reads.

RAM components are static (arena, state, buffers) plus the stack estimate; flash components are the
constants the C stores plus code. The kernels' scratch (``zo_edge.kernel_spec``: im2col columns, channel
planes, ADD's tables; one region after the arena, as large as the largest layer's need) and their code
depend on the instruction set the target compiles the kernels for (``isa``: "ref", "dsp" or "mve").
Persisting the learned state needs a RAM buffer of the state blob's size (``zoedge_train_state_save``
writes one); ``estimate(..., persist=True)`` adds it to zo-fc.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from zo_edge import kernel_spec, planner
from zo_edge.errors import ZoEdgeError
from zo_edge.qgraph import QGraph
from zo_edge.learners.cosine import CosineHead

CONFIGURATIONS = ("inference", "zo-fc", "fo")

POINTER_BYTES = 4  # Cortex-M
GRADIENT_BYTES = 4  # fo: float32 (an int32 fixed-point backward pass costs the same)

STACK_BYTES = 1024
STACK_NOTE = ("fixed estimate, 1 KiB: the kernels and the train step keep only scalars on the stack; the exported "
              "firmware's measured high-water mark on mps2-an386 is about 650 bytes")

WEIGHTED = tuple(op for op, k in kernel_spec.KERNELS.items() if k.weighted)

# Code estimate: function sizes measured once in the default model's firmware (arm-none-eabi-gcc 12.2,
# -O2 -mcpu=cortex-m4 -mthumb -mfloat-abi=hard, -ffunction-sections --gc-sections; zoedge_app.map).
CODE_BYTES = {
    "CONV_2D": 672, "DEPTHWISE_CONV_2D": 492, "FULLY_CONNECTED": 200, "ADD": 122, "MEAN": 146,
    "L2_NORMALIZATION": 884,  # zoedge_l2norm.c, measured alone with the same flags
    # not yet measured in a firmware (the first three ops' C is of the same kind): estimates
    "AVERAGE_POOL_2D": 200, "MAX_POOL_2D": 160, "SOFTMAX": 400,
    "requantize helper": 136,  # zoedge_multiply_by_quantized_multiplier
    "schedule per op": 34,  # run_op's switch: 480 bytes for 14 ops
    "schedule": 82,  # zoedge_infer 56 + zoedge_run_ops 26
    "training schedule": 324,  # zoedge_reset_state 136, zoedge_tensor 100, zoedge_run_prefix/suffix 44 + 44
    "runtime": 856,  # startup and vector table 384, memcpy 308, memset 164
    "integer learner library": 3436,  # zoedge_fixed.c, the functions a zo-fc step calls
    "train step": 1604,  # zoedge_train.c
}
# The DSP and MVE paths' objects (zoedge_conv.o, zoedge_depthwise_conv.o, zoedge_add.o, zoedge_pool.o), linked
# beside the reference kernels they fall back to: the default model's zo-fc firmware (batch 2, q 2), measured
# on mps2-an386 (dsp) and mps3-an547 (mve) from the link map. AVERAGE_POOL_2D shares zoedge_pool.o with MEAN
# and is taken at MEAN's size; every other op has no SIMD path.
SIMD_CODE_BYTES = {
    "ref": {},
    "dsp": {"CONV_2D": 3036, "DEPTHWISE_CONV_2D": 2284, "ADD": 852, "MEAN": 560, "AVERAGE_POOL_2D": 560},
    "mve": {"CONV_2D": 2256, "DEPTHWISE_CONV_2D": 1756, "ADD": 788, "MEAN": 712, "AVERAGE_POOL_2D": 712},
}
CODE_NOTE = ("documented estimate from per-function sizes measured once (arm-none-eabi-gcc 12.2 -O2, Cortex-M4, "
             "--gc-sections, the default model's firmware): {parts}; application and board code not included")


@dataclass
class Budget:
    configuration: str
    ram: dict[str, int]  # component name -> bytes, in reading order
    flash: dict[str, int]
    notes: dict[str, str]  # component -> how it was computed (one line)
    groups: dict[str, list] = field(default_factory=dict)  # group -> RAM component names ("trainable state", ...)

    @property
    def ram_bytes(self) -> int:
        return int(sum(self.ram.values()))

    @property
    def flash_bytes(self) -> int:
        return int(sum(self.flash.values()))

    def group_bytes(self, group: str) -> int:
        return int(sum(self.ram[name] for name in self.groups.get(group, [])))

    def to_json(self) -> dict:
        return {"configuration": self.configuration, "ram_bytes": self.ram_bytes, "flash_bytes": self.flash_bytes,
                "components": {"ram": dict(self.ram), "flash": dict(self.flash)}, "notes": dict(self.notes),
                "groups": {k: list(v) for k, v in self.groups.items()}}

    @classmethod
    def from_json(cls, data: dict) -> Budget:
        budget = cls(data["configuration"], dict(data["components"]["ram"]), dict(data["components"]["flash"]),
                     dict(data["notes"]), {k: list(v) for k, v in data.get("groups", {}).items()})
        if budget.ram_bytes != data["ram_bytes"] or budget.flash_bytes != data["flash_bytes"]:
            raise ZoEdgeError("the budget's totals do not match its components")
        return budget


class _Builder:
    """Collects components in order, with their notes and groups; zero-byte components are left out."""

    def __init__(self, configuration: str):
        self.budget = Budget(configuration, {}, {}, {}, {})

    def ram(self, name: str, nbytes: int, note: str, group: str) -> None:
        self._add(self.budget.ram, name, nbytes, note)
        if nbytes:
            self.budget.groups.setdefault(group, []).append(name)

    def flash(self, name: str, nbytes: int, note: str) -> None:
        self._add(self.budget.flash, name, nbytes, note)

    def _add(self, table: dict, name: str, nbytes: int, note: str) -> None:
        if name in table:
            raise ValueError(f"component {name!r} twice")
        if nbytes:
            table[name] = int(nbytes)
            self.budget.notes[name] = note


# -- the graph's constants ---------------------------------------------------------------------------------
def _kernel_constants(graph) -> list[int]:
    """Constant tensors the C kernels read (as model_export lists them): weighted ops' filter and bias,
    constant operands of ADD; MEAN's axes live in its parameter struct. Each once, in op order."""
    seen, out = set(), []
    for op in graph.ops:
        if op.opcode in planner.ALIAS_OPS or op.opcode in planner.SHAPE_OPS or op.opcode == "MEAN":
            continue
        operands = op.inputs[:3] if op.opcode in WEIGHTED else op.inputs[:2]
        for t in operands:
            if t >= 0 and graph.tensors[t].is_constant and t not in seen:
                seen.add(t)
                out.append(t)
    return out


def _weights_flash(b: _Builder, graph) -> None:
    consts = _kernel_constants(graph)
    int8 = sum(graph.tensors[t].size_bytes for t in consts if graph.tensors[t].dtype == np.int8)
    wide = sum(graph.tensors[t].size_bytes for t in consts if graph.tensors[t].dtype != np.int8)
    b.flash("weights and parameters", int8 + wide,
            f"{len(consts)} constant tensors the kernels read: {int8:,} B int8 weights + {wide:,} B int32 biases "
            "(trainable ones: the const initial copy zoedge_reset_state() copies into RAM)")


def _layer_parameters_flash(b: _Builder, graph, engine) -> None:
    arrays = structs = 0
    for step in engine.steps:
        opcode = step.op.opcode
        if opcode in planner.ALIAS_OPS or opcode in planner.SHAPE_OPS:
            continue
        layer = kernel_spec.layer(step.op, graph, step.params)  # the struct the export renders
        if layer.kernel.weighted:
            arrays += 2 * 4 * len(np.atleast_1d(step.params.multiplier))  # int32 multiplier + int32 shift
        structs += layer.struct_bytes + POINTER_BYTES * (2 if layer.kernel.weighted else 0)
    b.flash("layer parameters", arrays + structs,
            f"per-channel requantisation multipliers and shifts (int32 each) {arrays:,} B + per-layer parameter "
            f"structs of zoedge_kernels.h {structs:,} B")


def _io_ram(b: _Builder, graph, per_sample_note: str = "") -> None:
    x, y = graph.tensors[graph.inputs[0]], graph.tensors[graph.outputs[0]]
    b.ram("input/output buffers", x.size_bytes + y.size_bytes,
          f"the application's int8 sample {x.size_bytes:,} B and logits {y.size_bytes:,} B, which zoedge_infer "
          f"copies in and out{per_sample_note}", "application")


def _code(b: _Builder, parts: dict, code_bytes: dict | None) -> None:
    if code_bytes:
        target = code_bytes.get("target", "build")
        b.flash(f"code (measured {target})", int(code_bytes["bytes"]),
                code_bytes.get("note", f"code bytes of a measured {target} build"))
        return
    text = ", ".join(f"{k} {v:,}" for k, v in parts.items())
    b.flash("code (estimate)", sum(parts.values()), CODE_NOTE.format(parts=text))


def _inference_code(graph, isa: str) -> dict:
    kinds = sorted({op.opcode for op in graph.ops if op.opcode in kernel_spec.KERNELS})
    n = len(graph.ops)
    simd = SIMD_CODE_BYTES[isa]
    return {"kernels (" + ", ".join(k.lower() for k in kinds) + f"; {isa})": sum(CODE_BYTES[k] + simd.get(k, 0)
                                                                             for k in kinds)
            + CODE_BYTES["requantize helper"],
            f"schedule ({n} ops)": CODE_BYTES["schedule"] + CODE_BYTES["schedule per op"] * n,
            "runtime": CODE_BYTES["runtime"]}


def _load(run: dict):
    graph = run.graph
    from zo_edge.engine import Engine

    return graph, Engine(graph)


def _trainable(run) -> list[int]:
    """The plan's trainable tensors (adapters, then the classifier): the firmware's RAM tensors."""
    return run.plan.trainable_indices()


# -- inference --------------------------------------------------------------------------------------------
def _scratch(b: _Builder, graph, engine, isa: str, arena_bytes: int) -> None:
    """The kernels' scratch after the arena: ZOEDGE_SCRATCH_SIZE of the exported zoedge_model.h, at the
    arena's end rounded up to 8 bytes."""
    layers = kernel_spec.model_layers(graph, engine)
    need = kernel_spec.scratch_bytes([lay for _, lay in layers], isa)
    if need:
        index, largest = max(layers, key=lambda pair: pair[1].scratch_bytes(isa))
        b.ram("kernel scratch", need + (-arena_bytes % 8),
              f"the {isa} kernels' scratch after the arena, as large as the largest layer's need (op {index}, "
              f"{largest.kernel.opcode} {largest.path}: {largest.scratch_bytes(isa):,} B; zo_edge.kernel_spec)",
              "activations")


def _inference(run: dict, config, code_bytes, isa: str) -> Budget:
    graph, engine = _load(run)
    b = _Builder("inference")
    plan = planner.plan_arena(graph)
    b.ram("activation arena", plan.size,
          f"greedy plan over tensor lifetimes in graph order, no keep-alive ({len(set(plan.root.values()))} "
          "buffers, RESHAPE aliased; zo_edge.planner.plan_arena)", "activations")
    _scratch(b, graph, engine, isa, plan.size)
    _io_ram(b, graph)
    b.ram("stack (estimate)", STACK_BYTES, STACK_NOTE, "application")
    _weights_flash(b, graph)
    _layer_parameters_flash(b, graph, engine)
    _code(b, _inference_code(graph, isa), code_bytes)
    return b.budget


# -- zo-fc: the exported firmware ----------------------------------------------------------------------------
def _segment_bytes(vec) -> list[tuple]:
    """(role, graph bytes per value, master bytes per value, values) per segment of a ParamVector."""
    out = []
    for s in vec.segments:
        units = int(vec.units[s.start]) if s.size else 1
        graph_bytes = np.dtype(s.dtype).itemsize
        master = 2 if (s.dtype == np.int8 and units > 1) else graph_bytes
        out.append((s.role, graph_bytes, master, s.size))
    return out


CLASSIFIER_LAYOUTS = ("accumulate", "per_sample")


def wide_accumulator(batch: int) -> bool:
    """|e| <= 2^16 and |h - zp| <= 255: a batch sum of e (h - zp) fits int32 while B x 2^16 x 255 < 2^31."""
    return batch * (1 << 16) * 255 >= 1 << 31


def classifier_layout_bytes(layout: str, batch: int, classes: int, features: int, arena_bytes: int) -> int:
    """Static RAM of the classifier's gradient in one layout of zoedge_train.c (both give the same integers):
    ``accumulate``: per-element batch sums of e (h - zp) and e, C x F + C values (int32, the Q20 gradient in
    place; int64 sums + an int32 gradient when ``wide_accumulator``), plus one sample's softmax errors;
    ``per_sample``: the batch's softmax errors (C int32 each) and classifier inputs (F int8 each), summed in
    int64 per element after the batch; the int32 gradient is formed in the activation arena, idle then,
    when it holds C x F + C int32 values (else in a buffer of its own)."""
    n = classes * features + classes
    if layout == "accumulate":
        return (12 if wide_accumulator(batch) else 4) * n + 4 * classes
    if layout == "per_sample":
        return batch * (4 * classes + features) + (0 if arena_bytes >= 4 * n else 4 * n)
    raise ZoEdgeError(f"unknown classifier layout {layout!r}; one of {', '.join(CLASSIFIER_LAYOUTS)}")


def classifier_layout(batch: int, classes: int, features: int, arena_bytes: int,
                      choice: str = "auto") -> tuple[str, int]:
    """(layout, bytes): ``choice``, or with "auto" the smaller layout (``accumulate`` on a tie)."""
    if choice == "auto":
        sizes = {lay: classifier_layout_bytes(lay, batch, classes, features, arena_bytes) for lay in CLASSIFIER_LAYOUTS}
        choice = min(CLASSIFIER_LAYOUTS, key=lambda lay: sizes[lay])  # min keeps the first on a tie
    return choice, classifier_layout_bytes(choice, batch, classes, features, arena_bytes)


def classifier_layout_note(layout: str, batch: int, classes: int, features: int, arena_bytes: int) -> str:
    n = classes * features + classes
    if layout == "accumulate":
        if wide_accumulator(batch):
            return (f"accumulate layout: {n:,} int64 batch sums + int32 gradient (batch {batch}: B x 2^16 x 255 "
                    ">= 2^31)")
        return (f"accumulate layout: {n:,} int32 batch sums of e x (h - zp), the Q20 gradient in place (batch "
                f"{batch}: B x 2^16 x 255 < 2^31)")
    where = ("the int32 gradient formed in the idle activation arena" if arena_bytes >= 4 * n
             else f"+ an int32 gradient of {n:,} values (the arena is smaller)")
    return (f"per-sample layout: the batch's softmax errors and classifier inputs, B x (4C + F) = {batch} x "
            f"(4 x {classes} + {features}), summed in int64 after the batch; {where}")


def train_statics(learner, arena_bytes: int = 0) -> list[tuple[str, int, str]]:
    """Static RAM of zoedge_train.c that is not the learner's stored state (``Int8Learner.state_bytes``):
    (component, bytes, note). Mirrors firmware_export.train_export._ram_items, whose other items (int16
    masters, momentum) are trainable state here. ``arena_bytes``: the firmware's activation arena
    (ZOEDGE_ARENA_SIZE), which the per-sample classifier layout borrows for its gradient."""
    cfg = learner.config
    C = learner.num_classes
    items = []
    if learner.zo is not None:
        # the zeroth-order vector keeps every master outside the model's tensors, which the probes overwrite;
        # int16 masters are trainable state, the int8 and int32 ones are copies of the graph's values
        copies = sum(size * master for _, _, master, size in _segment_bytes(learner.zo) if master != 2)
        items.append(("adapter masters (int8/int32 copies)", copies,
                      ("the zeroth-order vector's unperturbed int8/int32 masters, kept apart from the model tensors "
                       "the probes write (zoedge_train_zo_*_master)")))
        items.append(("probe loss sums (int64)", 8 * 3 * cfg.q,
                      f"2q Q16 batch loss sums and q differences, int64: 24 x q = 24 x {cfg.q}"))
    if learner.fc is not None:
        F = learner.graph.tensors[learner.features_index].size_bytes  # int8 features
        layout, nbytes = classifier_layout(cfg.batch_size, C, F, arena_bytes)
        one_sample = 4 * C if layout == "accumulate" else 0  # its own component below
        items.append(("classifier gradient accumulators", nbytes - one_sample,
                      classifier_layout_note(layout, cfg.batch_size, C, F, arena_bytes)))
        if layout == "accumulate":
            items.append(("softmax errors (one sample)", 4 * C, f"e = softmax - onehot, int32 x {C} classes"))
    flags = ", classifier on" if learner.fc is not None else ""
    vectors = (learner.zo is not None) + (learner.fc is not None)
    items.append(("train-step flags and allowed classes", 20 + 4 * (learner.fc is not None) + C + 4 * vectors,
                  f"step, events, ready, open, added (uint32 each){flags}, a learning-rate factor per vector + the "
                  f"open batch's {C} allowed-class flags"))
    return items


def state_blob_bytes(learner) -> int:
    """Bytes of the state blob zoedge_train_state_save writes (firmware_export.train_export.state_size)."""
    n = 8
    for vec in (learner.zo, learner.fc):
        if vec is not None:
            n += _stored_master_bytes(vec)
            if learner.config.momentum:
                n += 4 * vec.n
    return n


def _stored_master_bytes(vec) -> int:
    if isinstance(vec, CosineHead):  # int16 unit rows and an int32 sigma
        return 2 * (vec.n - 1) + 4
    return sum(size * master for _, _, master, size in _segment_bytes(vec))


def _train_flash(learner) -> tuple[int, str, int, str]:
    """(tables bytes, note, descriptors bytes, note) of zoedge_train.c's constants."""
    tables = descriptors = 0
    for name, vec in (("zo", learner.zo), ("fc", learner.fc)):
        if vec is None:
            continue
        if isinstance(vec, CosineHead):  # initial unit rows (int16), view multipliers per row, u's and sigma's
            tables += 2 * (vec.n - 1) + 8 * vec.shape[0] + 2 * 8 + 2 * 8
            continue
        segments = len(vec.segments)
        channels = sum(int(s.shape[0]) if s.shape else 1 for s in vec.segments)
        tables += 8 * channels  # update multipliers {mult, rshift}
        if name == "zo":
            tables += 8 * channels + 4 * channels  # gradient multipliers, perturbation steps k
            descriptors += POINTER_BYTES * segments  # the model tensors the probes write
        else:
            tables += 2 * 8  # weight and bias gradient multipliers
        # segment descriptors (2 pointers + 5 uint32), vector struct, initial-value pointers, update config
        descriptors += segments * (2 * POINTER_BYTES + 5 * 4) + (POINTER_BYTES + 3 * 4) + POINTER_BYTES * segments + 32
    tables_note = ("per-channel update multipliers (8 B), zeroth-order gradient multipliers (8 B) and perturbation "
                   "steps (4 B) of zoedge_train.c")
    return (tables, tables_note, descriptors,
            "segment descriptors, vector and update-config structs, pointer tables of zoedge_train.c")


def _zo_fc(run: dict, config, code_bytes, persist: bool, isa: str) -> Budget:
    from zo_edge.learners.int8_learner import Int8Learner

    cfg = dataclasses.replace(config, method="zo-fc", mode="int8").check()
    graph, engine = _load(run)
    trainable = _trainable(run)
    learner = Int8Learner(run, cfg, graph=graph)
    b = _Builder("zo-fc")

    root = planner.arena_roots(graph)
    schedules = planner.split_schedules(graph, trainable, root, engine)
    plan = planner.plan_training_arena(graph, root=root, schedules=schedules, keep=[run.plan.classifier.logits])
    held = ", ".join(f"{t} ({graph.tensors[t].size_bytes:,} B)" for t in schedules.boundary)
    b.ram("activation arena", plan.size,
          f"greedy plan valid in graph order and prefix-then-suffix, boundary tensors {held} and the logits kept "
          "alive across suffix runs: the firmware's ZOEDGE_ARENA_SIZE", "activations")
    _scratch(b, graph, engine, isa, plan.size)

    state = learner.state_bytes()
    vectors = [v for v in (learner.zo, learner.fc) if v is not None]
    n_int8 = state["int8_weights"]
    b.ram("trainable state (int8 view)", state["int8_weights"],
          f"{n_int8:,} int8 weights the kernels read, the model's RAM tensors (Int8Learner.state_bytes)",
          "trainable state")
    b.ram("int32 biases", state["int32_biases"], "the trainable int32 biases the kernels read, the model's RAM tensors",
          "trainable state")
    b.ram("master copies (int16)", state["int16_master"],
          f"int16 masters of the int8 weights (master {cfg.master}): 2 B each", "trainable state")
    b.ram("momentum", state["momentum"],
          f"int32 Q20 velocity for every trained value (momentum {cfg.momentum:g}): 4 B x {sum(v.n for v in vectors):,}",
          "trainable state")
    for name, nbytes, note in train_statics(learner, plan.size):
        b.ram(name, nbytes, note, "train step")
    if persist:
        b.ram("state save buffer (persistence)", state_blob_bytes(learner),
              "the blob zoedge_train_state_save writes for zoedge_persist: tag, step, masters, momentum", "application")
    _io_ram(b, graph, "; the sample-at-a-time step (zoedge_train_add) needs no batch buffer")
    b.ram("stack (estimate)", STACK_BYTES, STACK_NOTE, "application")

    _weights_flash(b, graph)
    _layer_parameters_flash(b, graph, engine)
    b.flash("schedule tables", 4 * len(graph.tensors) + len(graph.ops),
            f"zoedge_tensor_offset (int32 x {len(graph.tensors)} tensors) and zoedge_op_in_prefix "
            f"(uint8 x {len(graph.ops)} ops), which the train step's prefix/suffix runs read")
    b.flash("loss tables", 256 * 4 + 256 * 2,
            "exp table of the logits scale (int32 x 256, zoedge_train.c) + log2 table (uint16 x 256, zoedge_fixed.c)")
    tables, tables_note, descriptors, descriptors_note = _train_flash(learner)
    b.flash("training multipliers and steps", tables, tables_note)
    b.flash("training descriptors", descriptors, descriptors_note)
    parts = _inference_code(graph, isa)
    parts.update({"training schedule": CODE_BYTES["training schedule"],
                  "integer learner library": CODE_BYTES["integer learner library"],
                  "train step": CODE_BYTES["train step"]})
    _code(b, parts, code_bytes)
    return b.budget


# -- fo: a device backward pass ----------------------------------------------------------------------------
@dataclass
class BackwardPlan:
    """The arena of one sample's forward and backward pass (``backward_plan``)."""

    forward: int  # graph-order inference arena
    gradients: int  # plan with the activation gradients added, forward lifetimes unchanged
    full: int  # ... and the forward activations the backward pass reads kept alive until it reads them
    saved: dict  # activation root -> bytes it is held for the backward pass
    gradient_bytes: dict  # gradient buffer root -> bytes (float32)
    backward_ops: list  # op indices in backward order


def _clamps(step) -> bool:
    """Whether an op's output is clamped (fused activation or the int8 range): its backward pass masks
    the gradient where the output saturated, so it reads the output."""
    return hasattr(step.params, "act_min")


def backward_plan(graph, engine, trainable) -> BackwardPlan:
    """Plan one sample's forward pass (graph order), the loss and a backward pass over the ops the
    trainable tensors reach, in one arena (``zo_edge.planner.place``).

    Backward op of a suffix op reads the gradient of its output, its int8 output (saturation mask) when
    it clamps, and its input activation when its weights train (weight gradient); it writes float32
    gradients of the inputs the trainable tensors reach. ADD and RESHAPE work in place (the first such
    input's gradient shares the output gradient's buffer unless that input already has one); MEAN's
    gradient is a materialised broadcast."""
    root = planner.arena_roots(graph)
    order = [op.index for op in graph.ops]
    steps = {s.op.index: s for s in engine.steps}
    trainable = set(trainable)
    tainted = set(trainable)
    suffix = []
    for op in graph.ops:
        if any(i in tainted for i in op.inputs):
            tainted.update(op.outputs)
            suffix.append(op.index)
    if not suffix:
        raise ZoEdgeError("no op reads the trainable tensors; there is nothing to backpropagate")

    forward_spans = planner.lifetimes(graph, order, root, keep_alive=graph.outputs)
    n = len(order)
    loss = n  # the loss reads the logits and writes their gradient
    act = {("a", r): span for r, span in forward_spans.items()}
    act_bytes = {("a", r): graph.tensors[r].size_bytes for r in forward_spans}
    extended = dict(act)

    def read_activation(t, position):
        key = ("a", root[t])
        first, last = extended[key]
        extended[key] = (first, max(last, position))

    grad_root, grad_spans, grad_bytes = {}, {}, {}

    def touch_grad(t, position, share_with=None):
        if t not in grad_root:
            grad_root[t] = grad_root[share_with] if share_with is not None else root[t]
        key = ("g", grad_root[t])
        first, last = grad_spans.get(key, (position, position))
        grad_spans[key] = (min(first, position), max(last, position))
        elements = int(np.prod(graph.tensors[t].shape, dtype=np.int64))
        grad_bytes[key] = max(grad_bytes.get(key, 0), GRADIENT_BYTES * elements)

    for t in graph.outputs:
        read_activation(t, loss)
        touch_grad(t, loss)
    backward = []
    for k, op_index in enumerate(reversed(suffix)):
        position = n + 1 + k
        op, step = graph.ops[op_index], steps[op_index]
        outs = [t for t in op.outputs if t in root and t in grad_root]
        if not outs:
            continue  # no gradient reaches this op's output (shape plumbing)
        backward.append(op_index)
        for t in outs:
            touch_grad(t, position)  # reads the output gradient
        if op.opcode in WEIGHTED or op.opcode == "ADD" or _clamps(step):
            for t in op.outputs:
                if t in root:
                    read_activation(t, position)  # saturation mask
        if op.opcode in WEIGHTED and any(i in trainable for i in op.inputs[1:3]):
            read_activation(op.inputs[0], position)  # weight gradient: dW = dy (x) x
        data_inputs = op.inputs[:1] if op.opcode in {*WEIGHTED, *planner.ALIAS_OPS, "MEAN"} else op.inputs
        in_place = op.opcode == "ADD" or op.opcode in planner.ALIAS_OPS
        for t in data_inputs:
            if t < 0 or t not in root or t not in tainted or t in trainable:
                continue
            share = outs[0] if in_place and t not in grad_root else None
            touch_grad(t, position, share)
            in_place = False  # only the first input may take the output gradient's buffer

    # a gradient lives from its first write to its last read: the producer's backward op reads it last
    forward_size, _ = planner.place(act_bytes, [act])
    grads_size, _ = planner.place({**act_bytes, **grad_bytes}, [{**act, **grad_spans}])
    full_size, _ = planner.place({**act_bytes, **grad_bytes}, [{**extended, **grad_spans}])
    saved = {key[1]: act_bytes[key] for key, span in extended.items() if span[1] > act[key][1]}
    return BackwardPlan(forward_size, grads_size, max(full_size, grads_size), saved,
                        {r: v for (_, r), v in grad_bytes.items()}, backward)


def _fo(run: dict, config, code_bytes, isa: str) -> Budget:
    from zo_edge.learners.int8_state import ParamVector

    graph, engine = _load(run)
    plan = run.plan
    trainable = _trainable(run)
    b = _Builder("fo")
    bp = backward_plan(graph, engine, trainable)
    inference = planner.plan_arena(graph)
    b.ram("activation arena", inference.size, "the inference plan: the forward pass in graph order", "activations")
    saved = ", ".join(f"{t} ({v:,} B)" for t, v in sorted(bp.saved.items()))
    grads = ", ".join(f"{t} ({v:,} B)" for t, v in sorted(bp.gradient_bytes.items()))
    b.ram("activation gradients (float32)", max(bp.gradients - inference.size, 0),
          f"arena growth when one sample's backward pass over ops {bp.backward_ops} adds float32 gradients of tensors "
          f"{grads} (materialised per layer, in place through ADD/RESHAPE; planned with the forward pass)", "backprop")
    b.ram("backprop activations", bp.full - max(bp.gradients, inference.size),
          f"arena growth when the forward activations the backward pass reads stay alive until it reads them: "
          f"{saved} (inputs of trained layers, outputs of clamping ops for the saturation mask)", "backprop")
    _scratch(b, graph, engine, isa, max(bp.full, inference.size))  # the forward pass runs the same kernels

    vec = ParamVector(graph, plan.roles(), [role for role, _ in plan.trainables()], "int8")
    stored = vec.stored_bytes(False)
    b.ram("trainable state (int8 view)", stored["int8_weights"],
          f"{stored['int8_weights']:,} int8 weights the forward pass reads, re-quantised from the masters after each "
          "step", "trainable state")
    b.ram("int32 biases", stored["int32_biases"], "the trainable int32 biases the forward pass reads", "trainable state")
    b.ram("master copies (float32)", 4 * vec.n, f"float32 master of every trained value: 4 B x {vec.n:,}",
          "trainable state")
    b.ram("momentum", 4 * vec.n if config.momentum else 0,
          f"float32 velocity per trained value (momentum {config.momentum:g})", "trainable state")
    b.ram("gradient accumulators (float32)", 4 * vec.n,
          f"float32 weight and bias gradients summed over the batch of {config.batch_size} (per-sample backward "
          "passes: the batch size costs no activation memory)", "backprop")
    _io_ram(b, graph)
    b.ram("stack (estimate)", STACK_BYTES, STACK_NOTE, "application")

    _weights_flash(b, graph)
    _layer_parameters_flash(b, graph, engine)
    channels = sum(len(graph.tensors[t].scale) if graph.tensors[t].scale is not None else 1 for t in trainable)
    b.flash("requantisation scales (float32)", 4 * channels,
            f"the trained tensors' {channels} per-channel scales, to re-quantise the float masters after each step")
    parts = _inference_code(graph, isa)
    kinds = sorted({graph.ops[i].opcode for i in bp.backward_ops if graph.ops[i].opcode in kernel_spec.KERNELS})
    parts["backward kernels (estimate: 2 x forward)"] = 2 * sum(CODE_BYTES[k] for k in kinds)
    parts["loss, softmax and optimizer (estimate: as the integer learner library)"] = CODE_BYTES["integer learner library"]
    _code(b, parts, code_bytes)
    return b.budget


# -- the entry point ---------------------------------------------------------------------------------------
def estimate(run: dict, config, configuration: str, code_bytes: dict | None = None, *, persist: bool = False,
             isa: str = "dsp") -> Budget:
    """The RAM and flash budget of ``run``'s model (``zo_edge.build.load_run``) in one configuration.

    ``config``: a ``LearnerConfig``; ``code_bytes``: ``{"target": name, "bytes": n}`` from a measured build
    replaces the code estimate; ``persist``: zo-fc also holds a state save buffer; ``isa``: the kernels'
    instruction set on the target (``kernel_spec.CORE_ISA`` of its core; "dsp": Cortex-M4/M7/M33), which
    sizes their scratch and their code."""
    if configuration not in CONFIGURATIONS:
        raise ZoEdgeError(f"unknown configuration {configuration!r}; choose one of {', '.join(CONFIGURATIONS)}")
    if isa not in kernel_spec.ISAS:
        raise ZoEdgeError(f"unknown instruction set {isa!r}; one of {', '.join(kernel_spec.ISAS)}")
    config.check()
    if configuration == "inference":
        return _inference(run, config, code_bytes, isa)
    if configuration == "zo-fc":
        return _zo_fc(run, config, code_bytes, persist, isa)
    return _fo(run, config, code_bytes, isa)


def estimate_all(run: dict, config, code_bytes: dict | None = None, *, persist: bool = False,
                 isa: str = "dsp") -> dict[str, Budget]:
    """``estimate`` for every configuration, in ``CONFIGURATIONS`` order."""
    return {c: estimate(run, config, c, code_bytes, persist=persist, isa=isa) for c in CONFIGURATIONS}
