"""The activation arena planner: greedy offsets over buffer lifetimes, as TFLM's GreedyMemoryPlanner.

One home for the plan the firmware uses (``firmware_export.model_export`` renders its offsets into
``zoedge_model.c``) and the plan the memory estimate reports (``zo_edge.memory``): the two cannot drift.

* Every activation of the graph gets a buffer; a RESHAPE output shares its input's (``arena_roots``:
  tensor -> the tensor whose bytes hold it). The int32 shape plumbing of a Keras Flatten (SHAPE,
  STRIDED_SLICE, PACK) feeds only RESHAPE's shape operand and needs no memory.
* A buffer lives from the first op of a schedule that touches it to the last (``lifetimes``); graph
  inputs are written before the first op. ``keep_alive`` tensors live to the schedule's end.
* ``place``: largest buffer first (ties: earliest first use, then id), each at the lowest aligned
  offset where it overlaps no placed buffer alive at the same time *in any of the schedules*; the
  arena is the highest end, rounded up to the alignment.

Schedules: graph order (plain inference) and, for training, prefix then suffix (the prefix once per
sample, the suffix many times): ``plan_training_arena`` keeps the tensors the suffix reads from the
prefix (the boundary) and the logits alive to the end of both, so a suffix may run again after either.
``place`` also takes arbitrary buffers (the memory estimate plans a backward pass with it).
"""

from __future__ import annotations

from dataclasses import dataclass

ALIGNMENT = 4  # bytes; every arena offset is a multiple (word access stays possible for kernels)
ALIAS_OPS = frozenset({"RESHAPE", "EXPAND_DIMS"})  # output shares its input's bytes
SHAPE_OPS = frozenset({"SHAPE", "STRIDED_SLICE", "PACK"})  # shape plumbing: no arena buffer


@dataclass
class ArenaPlan:
    size: int
    offsets: dict  # arena tensor index -> byte offset (a RESHAPE output has its input's)
    nbytes: dict  # arena tensor index -> bytes
    root: dict  # arena tensor index -> the tensor whose buffer it uses (itself unless aliased)
    lifetimes: list  # per schedule: root -> (first, last) position, inclusive


@dataclass
class Schedules:
    """The two orders the firmware runs a graph in, from ``Engine.split_frozen`` on the trainable tensors."""

    graph_order: list  # op indices in graph order
    split_order: list  # prefix ops, then suffix ops (each in graph order)
    prefix_ops: set  # op indices of the prefix
    boundary: list  # tensors the suffix reads from the prefix (the cut first), activations only


def _align(n: int, alignment: int = ALIGNMENT) -> int:
    return -(-n // alignment) * alignment


def arena_roots(graph) -> dict:
    """Activation tensor -> the tensor whose arena buffer holds it (a RESHAPE output: its input's).

    Graph inputs and every op output except shape plumbing (``SHAPE_OPS``)."""
    root = {t: t for t in graph.inputs}
    for op in graph.ops:
        if op.opcode in ALIAS_OPS:
            root[op.outputs[0]] = root[op.inputs[0]]
        elif op.opcode not in SHAPE_OPS:
            for t in op.outputs:
                root[t] = t
    return root


def lifetimes(graph, order, root: dict, keep_alive=()) -> dict:
    """Root tensor -> [first op that writes it, last op that reads it] as positions in ``order``."""
    span = {}

    def touch(tensor, position):
        r = root[tensor]
        first, last = span.get(r, (position, position))
        span[r] = (min(first, position), max(last, position))

    for index in graph.inputs:
        touch(index, 0)  # written before the first op
    for position, op_index in enumerate(order):
        op = graph.ops[op_index]
        for t in op.inputs + op.outputs:
            if t in root:
                touch(t, position)
    end = len(order) - 1
    for t in keep_alive:
        first, _ = span[root[t]]
        span[root[t]] = (first, end)
    return span


def place(nbytes: dict, spans: list, alignment: int = ALIGNMENT) -> tuple[int, dict]:
    """(arena size, buffer -> offset): first-fit placement, largest buffer first.

    ``nbytes``: buffer -> bytes; ``spans``: one dict per schedule, buffer -> (first, last) inclusive.
    Two buffers conflict when their spans overlap in any schedule."""
    order = sorted(nbytes, key=lambda r: (-nbytes[r], spans[0][r][0], r))

    def conflict(a, b):
        return any(s[a][0] <= s[b][1] and s[b][0] <= s[a][1] for s in spans)

    placed = {}
    for r in order:
        offset = 0
        taken = sorted((placed[o], placed[o] + nbytes[o]) for o in placed if conflict(o, r))
        for start, stop in taken:
            if offset + nbytes[r] <= start:
                break
            offset = max(offset, _align(stop, alignment))
        placed[r] = offset
    size = max((placed[r] + nbytes[r] for r in placed), default=0)
    return _align(size, alignment), placed


def plan_arena(graph, root: dict | None = None, schedules=None, keep_alive=()) -> ArenaPlan:
    """The arena for ``schedules`` (lists of op indices; default: graph order alone).

    ``root``: ``arena_roots(graph)`` unless given; ``keep_alive``: tensors alive to each schedule's end."""
    root = arena_roots(graph) if root is None else root
    schedules = [[op.index for op in graph.ops]] if schedules is None else schedules
    nbytes = {t: graph.tensors[t].size_bytes for t in root}
    spans = [lifetimes(graph, order, root, keep_alive) for order in schedules]
    roots = {r: nbytes[r] for r in set(root.values())}
    size, placed = place(roots, spans)
    return ArenaPlan(size, {t: placed[root[t]] for t in root}, nbytes, dict(root), spans)


def split_schedules(graph, trainable, root: dict | None = None, engine=None) -> Schedules:
    """Graph order and prefix-then-suffix order for these trainable tensors (``Engine.split_frozen``;
    ``engine``: an ``Engine(graph)`` already at hand); with no trainable tensor everything is prefix
    and there is no boundary."""
    root = arena_roots(graph) if root is None else root
    graph_order = [op.index for op in graph.ops]
    trainable = list(trainable)
    if not trainable:
        return Schedules(graph_order, list(graph_order), set(graph_order), [])
    if engine is None:
        from zo_edge.engine import Engine

        engine = Engine(graph)
    split = engine.split_frozen(trainable)
    prefix_ops = {s.op.index for s in split.prefix}
    boundary = [t for t in split.boundary if t in root]  # a shape folded at export needs no memory
    split_order = [i for i in graph_order if i in prefix_ops] + [i for i in graph_order if i not in prefix_ops]
    return Schedules(graph_order, split_order, prefix_ops, boundary)


def plan_training_arena(graph, trainable=(), root: dict | None = None, schedules: Schedules | None = None,
                        engine=None, keep=()) -> ArenaPlan:
    """The firmware's arena: valid in graph order and prefix-then-suffix order, with the boundary, the
    graph outputs and ``keep`` (the logits, when a SOFTMAX follows them: the train step reads them after
    the suffix) alive to the end of both (``zoedge_run_suffix`` may run again after either).
    ``schedules``: ``split_schedules(graph, trainable, root)`` unless given."""
    root = arena_roots(graph) if root is None else root
    s = split_schedules(graph, trainable, root, engine) if schedules is None else schedules
    keep_alive = set(s.boundary) | set(graph.outputs) | {t for t in keep if t in root}
    return plan_arena(graph, root, [s.graph_order, s.split_order], keep_alive=keep_alive)


def check_plan(plan: ArenaPlan) -> None:
    """Raise AssertionError if two buffers alive together in some schedule share bytes."""
    roots = sorted(set(plan.root.values()))
    for i, a in enumerate(roots):
        for b in roots[i + 1 :]:
            alive = any(s[a][0] <= s[b][1] and s[b][0] <= s[a][1] for s in plan.lifetimes)
            apart = (plan.offsets[a] + plan.nbytes[a] <= plan.offsets[b]
                     or plan.offsets[b] + plan.nbytes[b] <= plan.offsets[a])
            assert apart or not alive, f"tensors {a} and {b} are alive together and share arena bytes"

