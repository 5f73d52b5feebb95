"""Export an int8 QGraph as C: model constants, trainable state, one activation arena, the op schedule.

Python only prepares plain numbers and lists; the jinja2 templates in ``templates/`` write the C.
Per-layer parameters are the engine's own (``Engine(graph).steps[i].params``), so the C kernels and
the simulator start from the same multipliers, shifts and windows.

Memory:
* constants (weights, biases, multipliers, the .tflite) are ``static const`` arrays: flash;
* trainable tensors (adapter and classifier weights and biases) are RAM arrays with a const initial
  copy that ``zoedge_reset_state()`` copies in;
* activations share one static arena, placed by ``zo_edge.planner.plan_training_arena`` (greedy
  first-fit, largest first, like TFLM's GreedyMemoryPlanner; ``zo_edge.memory`` reports the same plan).
  The plan holds for two schedules: the graph's op order (``zoedge_run_ops``, ``zoedge_infer``) and
  prefix-then-suffix (``zoedge_run_prefix`` once, ``zoedge_run_suffix`` many times). The boundary
  tensors the suffix reads and the logits stay alive to the end of both, so a suffix may run again
  after either.

RESHAPE is free: its output shares its input's bytes. The int32 shape plumbing of a Keras Flatten
(SHAPE, STRIDED_SLICE, PACK) only feeds RESHAPE's shape operand, which the C never reads, so those
ops are folded away at export.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zo_edge.engine import Engine
from zo_edge.errors import ZoEdgeError
from zo_edge import kernel_spec
from zo_edge.planner import ALIAS_OPS, SHAPE_OPS, ArenaPlan, arena_roots, plan_training_arena, split_schedules
from firmware_export.render import environment

TEMPLATES = Path(__file__).parent / "templates"
LIBRARY_DIR = Path(__file__).parent / "c"  # the kernels' C, copied verbatim (zo_edge/kernel_spec.py lists it)
LIBRARY_FILES = kernel_spec.LIBRARY_HEADERS + kernel_spec.LIBRARY_SOURCES
RENDERED_FILES = ("zoedge_model.h", "zoedge_model.c", "host_infer_main.c")
OUTPUT_FILES = LIBRARY_FILES + RENDERED_FILES
PER_ROW = 16  # numbers per line in the generated arrays

KERNELS = kernel_spec.KERNELS
FOLDED_OPS = SHAPE_OPS  # shape plumbing: no arena buffer, no C
C_TYPES = {np.dtype(np.int8): "int8_t", np.dtype(np.int32): "int32_t"}


# -- the render context ---------------------------------------------------------------------------------
def _rows(values) -> list[list[int]]:
    flat = [int(v) for v in np.ravel(values)]
    return [flat[i : i + PER_ROW] for i in range(0, len(flat), PER_ROW)]


def _comment(text: str, limit: int = 100) -> str:
    """A tensor name made safe inside a C comment, shortened (converter names can run long)."""
    text = text.replace("*/", "* /")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _identifier(role: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in role).lower()


def _c_type(tensor) -> str:
    ctype = C_TYPES.get(np.dtype(tensor.dtype))
    if ctype is None:
        raise ZoEdgeError(f"tensor {tensor.index} ({tensor.name}) is {np.dtype(tensor.dtype).name}; "
                          "the firmware kernels take int8 activations and weights and int32 biases")
    return ctype


def _check_supported(graph) -> None:
    unsupported = sorted({op.opcode for op in graph.ops} - set(KERNELS) - ALIAS_OPS - FOLDED_OPS)
    if unsupported:
        raise ZoEdgeError(f"{graph.source} uses {', '.join(unsupported)}, which the firmware export does not "
                          f"support; supported: {', '.join(sorted(set(KERNELS) | ALIAS_OPS | FOLDED_OPS))}")
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise ZoEdgeError(f"{graph.source} has {len(graph.inputs)} inputs and {len(graph.outputs)} outputs; "
                          "the firmware export takes one of each")
    folded = {o for op in graph.ops if op.opcode in FOLDED_OPS for o in op.outputs}
    for op in graph.ops:
        # a computed shape may feed other shape ops and RESHAPE's shape operand, nothing else
        reads_data = op.inputs[:1] if op.opcode in ALIAS_OPS else [] if op.opcode in FOLDED_OPS else op.inputs
        if any(i in folded for i in reads_data):
            raise ZoEdgeError(f"{op.opcode} (op {op.index}) reads a computed shape; the firmware export folds "
                              "shape ops only when they feed RESHAPE")
    if any(o in folded for o in graph.outputs):
        raise ZoEdgeError(f"{graph.source} outputs a computed shape; the firmware export takes an int8 output")


def _arena_roots(graph) -> dict:
    """Activation tensor -> the tensor whose arena buffer holds it (``zo_edge.planner.arena_roots``);
    every activation must be int8."""
    root = arena_roots(graph)
    for t in root:
        if graph.tensors[t].dtype != np.int8:
            raise ZoEdgeError(f"activation {t} ({graph.tensors[t].name}) is not int8; export an int8-interface model")
    return root


def _op_entry(step, graph, root: dict, prefix_ops: set, where: dict) -> dict:
    """One op of the schedule: its kernel function (the path ``zo_edge.kernel_spec`` chooses), the parameter
    struct's fields and arrays, the tensors it takes, and its scratch per instruction set."""
    op, p = step.op, step.params
    entry = dict(index=op.index, opcode=op.opcode, kind="kernel", in_prefix=op.index in prefix_ops,
                 output=op.outputs[0] if op.outputs[0] in root else -1, args=[], fields={}, arrays=[],
                 scratch={isa: 0 for isa in kernel_spec.ISAS}, takes_scratch=False)
    if op.opcode in ALIAS_OPS or op.opcode in FOLDED_OPS:
        entry["kind"] = "alias" if op.opcode in ALIAS_OPS else "folded"
        return entry
    layer = kernel_spec.layer(op, graph, p)
    entry.update(function=layer.function, path=layer.path, params_type=layer.kernel.struct,
                 fields={k: kernel_spec.c_initializer(v) for k, v in layer.fields.items()},
                 scratch={isa: layer.scratch_bytes(isa) for isa in kernel_spec.ISAS},
                 takes_scratch=layer.kernel.takes_scratch, layer=layer)
    if layer.kernel.weighted:
        operands = (op.inputs + [-1])[:3]  # input, filter, bias (an omitted bias is NULL)
        entry["arrays"] = [dict(name="multiplier", values=_rows(p.multiplier)),
                           dict(name="shift", values=_rows(p.shift))]
        _check_accumulator(op, p, graph, operands)
        if layer.kernel.weight_dependent_prepare and where.get(operands[1]) == "state":
            raise ZoEdgeError(f"{op.opcode} (op {op.index}): the {layer.path} path prepares from its filter, "
                              "which is trainable state here")
    else:
        operands = op.inputs[: layer.kernel.inputs]  # MEAN's axes are in its fields
    entry["args"] = operands + [op.outputs[0]]
    return entry


def build_context(graph, plan=None, trainable_roles=None) -> tuple[dict, ArenaPlan]:
    """Everything the templates need, as plain numbers and lists, and the arena plan.

    ``plan``: the run's adaptation plan (``zo_edge.plan``), or None for inference-only firmware;
    ``trainable_roles``: the roles whose tensors become RAM state (default: all of the plan's)."""
    _check_supported(graph)
    roles = plan.roles() if plan is not None else {}
    if trainable_roles is None:
        trainable_roles = [role for role, _ in plan.trainables()] if plan is not None else []
    missing = [r for r in trainable_roles if roles.get(r) is None]
    if missing:
        raise ZoEdgeError(f"the plan has no {', '.join(missing)}; rebuild the run with `zo-edge build`")
    trainable = {roles[r]: r for r in trainable_roles}
    for index, role in trainable.items():
        if not graph.tensors[index].is_constant:
            raise ZoEdgeError(f"{role} (tensor {index}) is not a constant tensor; it cannot be trainable state")

    engine = Engine(graph)
    # the arena (zo_edge.planner): graph order and prefix-then-suffix, the boundary kept alive
    schedules = split_schedules(graph, list(trainable), engine=engine)
    prefix_ops, boundary = schedules.prefix_ops, schedules.boundary
    root = _arena_roots(graph)
    keep = [plan.classifier.logits] if plan is not None else []
    arena = plan_training_arena(graph, root=root, schedules=schedules, keep=keep)

    # where each tensor lives in C: the arena (activations), state (trainable: RAM), flash (other constants)
    tensors = {t: dict(index=t, where="arena", offset=arena.offsets[t], bytes=arena.nbytes[t]) for t in root}
    state = []
    for index, role in trainable.items():
        t = graph.tensors[index]
        name = _identifier(role)
        tensors[index] = dict(index=index, where="state", name=name, bytes=t.size_bytes)
        state.append(dict(role=role, index=index, name=name, macro=name.upper(), ctype=_c_type(t),
                          size=int(t.data.size), bytes=t.size_bytes, shape=list(t.shape), rows=_rows(t.data)))
    where = {t: v["where"] for t, v in tensors.items()}
    ops = [_op_entry(step, graph, root, prefix_ops, where) for step in engine.steps]
    scratch = {isa: kernel_spec.scratch_bytes([op["layer"] for op in ops if "layer" in op], isa)
               for isa in kernel_spec.ISAS}
    constants = []
    for op in ops:
        for t in op["args"]:
            if t < 0 or t in tensors:
                continue
            tensor = graph.tensors[t]
            if not tensor.is_constant:
                raise ZoEdgeError(f"{op['opcode']} (op {op['index']}) reads tensor {t}, which nothing computes")
            tensors[t] = dict(index=t, where="flash", name=f"t{t}", bytes=tensor.size_bytes)
            constants.append(dict(index=t, name=f"t{t}", tensor_name=_comment(tensor.name), ctype=_c_type(tensor),
                                  shape=list(tensor.shape), size=int(tensor.data.size), rows=_rows(tensor.data)))

    def quant(index):
        t = graph.tensors[index]
        scale, zero_point = t.scalar_quant()
        return dict(index=index, offset=arena.offsets[index], size=t.size_bytes, scale=scale, zero_point=zero_point)

    context = dict(
        source=Path(graph.source).name, num_ops=len(graph.ops), num_tensors=len(graph.tensors),
        arena_size=arena.size, scratch=scratch, input=quant(graph.inputs[0]), logits=quant(graph.outputs[0]),
        constants=constants, state=state, ops=ops, tensors=tensors, boundary=boundary,
        roles=sorted((_identifier(r).upper(), int(i)) for r, i in roles.items()),
        tensor_table=[tensors.get(i, dict(index=i, where=None, bytes=0)) for i in range(len(graph.tensors))],
        tflite_rows=_rows(np.frombuffer(graph.model_bytes, np.uint8)), tflite_len=len(graph.model_bytes),
    )
    return context, arena


def _check_accumulator(op, p, graph, operands) -> None:
    """The C kernels accumulate in int32 as TFLM does; refuse a layer whose sum could leave int32
    (the simulator would wrap it, C would be undefined)."""
    bias = graph.tensors[operands[2]].data if operands[2] >= 0 else None
    bound = p.accumulator_bound + (int(np.abs(bias.astype(np.int64)).max(initial=0)) if bias is not None else 0)
    if bound >= 1 << 31:
        raise ZoEdgeError(f"{op.opcode} (op {op.index}) can overflow its int32 accumulator (bound {bound}); "
                          "the firmware export needs smaller layers")


# -- rendering ------------------------------------------------------------------------------------------
@dataclass
class ExportedModel:
    out_dir: Path
    files: list  # written paths
    arena: ArenaPlan
    scratch: dict  # instruction set -> scratch bytes at the arena's end
    layers: list  # (op index, zo_edge.kernel_spec.Layer) of every op with a kernel
    prefix_ops: list  # op indices
    boundary: list  # tensor indices the suffix reads from the prefix
    traced: list  # (op index, tensor index) of every op output that exists in C, in op order


_environment = environment  # the shared template environment (firmware_export/render.py)


def render_model(graph, plan, out_dir, trainable_roles=None) -> ExportedModel:
    """Write the model's C sources (``OUTPUT_FILES``) into ``out_dir``.

    ``plan``: the run's adaptation plan (None: inference only); ``trainable_roles``: the role names whose
    tensors become RAM state, by default every trainable tensor of the plan.
    """
    context, arena = build_context(graph, plan, trainable_roles)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    env = _environment()
    files = []
    for name in LIBRARY_FILES:
        path = out / name
        shutil.copyfile(LIBRARY_DIR / name, path)
        files.append(path)
    for name in RENDERED_FILES:
        path = out / name
        path.write_text(env.get_template(name + ".j2").render(**context))
        files.append(path)
    return ExportedModel(
        out_dir=out, files=files, arena=arena, scratch=dict(context["scratch"]),
        layers=[(op["index"], op["layer"]) for op in context["ops"] if "layer" in op],
        prefix_ops=[op["index"] for op in context["ops"] if op["in_prefix"]],
        boundary=list(context["boundary"]),
        traced=[(op["index"], op["output"]) for op in context["ops"] if op["output"] >= 0],
    )
