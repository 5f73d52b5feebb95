"""The int8 engine: runs a QGraph with TFLM's reference arithmetic, batched over samples.

Every op is prepared once (``zo_edge.kernels``); a run walks the ops in graph order. The graph's
tensors carry a batch of 1; the engine carries a batch of N on axis 0 of every activation.

``Engine.split(cut)`` divides the graph at a tensor: the prefix (what the cut depends on) runs once
per sample, the suffix (everything after) as often as needed with other constants — this is what
makes zeroth-order training affordable: 2q+1 suffix passes per step, one prefix pass per sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zo_edge.errors import ZoEdgeError
from zo_edge.kernels import KERNELS, SUPPORTED_OPS, unsupported_note
from zo_edge.kernels.checks import InvalidOp
from zo_edge.kernels.quantize import affine_quantize
from zo_edge.qgraph import QGraph
from zo_edge.tflite_check import unchecked_failure


CHUNK = 64  # samples per pass through the graph


def _join(parts: list[np.ndarray], batched: bool) -> np.ndarray:
    return np.concatenate(parts) if batched else parts[0]


@dataclass
class Step:
    op: object
    evaluate: object
    params: object
    shared: object = None  # the kernel's ``shared`` form for stacked runs (``SplitEngine.run_suffix``)


def _check_dataflow(graph: QGraph) -> None:
    """Every tensor an op reads exists when it runs; the graph's inputs carry the batch axis the engine uses."""
    def refuse(problem):
        raise ZoEdgeError(f"{graph.source} is corrupt: {problem}")

    if not graph.inputs or not graph.outputs:
        refuse(f"it has {len(graph.inputs)} inputs and {len(graph.outputs)} outputs; a model needs at least one of each")
    for index in graph.inputs:
        t = graph.tensors[index]
        if not t.shape or t.shape[0] != 1:
            refuse(f"its input {index} has shape {list(t.shape)}; zo-edge runs graphs whose inputs have batch size 1 "
                   "(it batches on axis 0 itself)")
    computed = set(graph.inputs)
    constants = {t.index for t in graph.tensors if t.is_constant}
    for op in graph.ops:
        for index in op.inputs:
            if index >= 0 and index not in computed | constants:
                refuse(f"{op.opcode} (op {op.index}) reads tensor {index}, which no earlier op writes")
        for index in op.outputs:
            if index in computed | constants:
                refuse(f"{op.opcode} (op {op.index}) writes tensor {index}, which is already a constant, an input "
                       "or another op's output")
            computed.add(index)
    for index in graph.outputs:
        if index not in computed:
            refuse(f"its output {index} is {'a constant' if index in constants else 'written by no op'}")


def _batched_tensors(graph: QGraph) -> set[int]:
    """Tensors that carry the batch axis: whatever derives from a graph input, except shapes."""
    batched = set(graph.inputs)
    for op in graph.ops:
        if op.opcode != "SHAPE" and any(i in batched for i in op.inputs):
            batched.update(op.outputs)
    return batched


class Engine:
    def __init__(self, graph: QGraph):
        unsupported = sorted({op.opcode for op in graph.ops} - set(KERNELS))
        if unsupported:
            note = unsupported_note(unsupported)
            raise ZoEdgeError(
                f"{graph.source} uses {', '.join(unsupported)}, which the int8 engine does not support"
                + (f" ({note})" if note else "") + f"; supported ops: {', '.join(SUPPORTED_OPS)}"
            )
        _check_dataflow(graph)
        self.graph = graph
        self.batched = _batched_tensors(graph)
        self.constants = {t.index: t.data for t in graph.tensors if t.is_constant}
        self.steps = []
        for op in graph.ops:
            kernel = KERNELS[op.opcode]
            where = f"{graph.source}: {op.opcode} (op {op.index})"
            if op.options_table not in (None, kernel.options):
                raise ZoEdgeError(f"{where} cannot run: it carries {op.options_table}, not {kernel.options}")
            try:
                params = kernel.prepare(op, graph, [i in self.batched for i in op.inputs])
            except InvalidOp as exc:
                raise ZoEdgeError(f"{where} cannot run: {exc}") from None
            except Exception as exc:  # noqa: BLE001 - the last line of defence behind the kernel's own checks
                raise unchecked_failure(graph.source, f"preparing {op.opcode} (op {op.index})", exc) from None
            self.steps.append(Step(op, kernel.evaluate, params, kernel.shared))

    # -- running -------------------------------------------------------------------------------
    def check_inputs(self, inputs) -> list[np.ndarray]:
        """The inputs as a list of arrays, or a ZoEdgeError saying what was expected and what came."""
        if isinstance(inputs, np.ndarray):
            inputs = [inputs]
        if len(inputs) != len(self.graph.inputs):
            raise ZoEdgeError(f"{self.graph.source} takes {len(self.graph.inputs)} input(s), {len(inputs)} given")
        for k, (x, index) in enumerate(zip(inputs, self.graph.inputs)):
            t = self.graph.tensors[index]
            expected = ("N",) + tuple(t.shape[1:])
            if x.dtype != t.dtype or x.ndim != len(t.shape) or tuple(x.shape[1:]) != tuple(t.shape[1:]):
                raise ZoEdgeError(
                    f"input {k} of {self.graph.source}: expected {np.dtype(t.dtype).name} "
                    f"[{', '.join(map(str, expected))}], given {x.dtype.name} [{', '.join(map(str, x.shape))}]"
                )
            if len(x) != len(inputs[0]) or len(x) == 0:
                raise ZoEdgeError(f"input {k} of {self.graph.source} has {len(x)} samples; every input needs the "
                                  f"same number, at least one ({len(inputs[0])} in input 0)")
        return list(inputs)

    def quantize_input(self, x, k: int = 0) -> np.ndarray:
        """Float samples [N, ...] to the graph's int8 input k, with the input tensor's scale and zero point."""
        t = self.graph.tensors[self.graph.inputs[k]]
        scale, zero_point = t.scalar_quant()
        return affine_quantize(x, scale, zero_point, t.dtype)

    def run(self, inputs, capture=(), constants=None):
        """Run the whole graph on a batch. Returns (outputs, captured) like ``TflmOracle.run``."""
        inputs = self.check_inputs(inputs)
        n = inputs[0].shape[0]
        outputs, captured = [], []
        for start in range(0, max(n, 1), CHUNK):  # chunks keep the int64 temporaries in cache
            values = dict(zip(self.graph.inputs, (x[start : start + CHUNK] for x in inputs)))
            self._execute(self.steps, values, constants)
            outputs.append(self._outputs(values, len(values[self.graph.inputs[0]])))
            captured.append({i: values[i] for i in capture})
        if len(outputs) == 1:
            return outputs[0], captured[0]
        joined = [np.concatenate(parts) for parts in zip(*outputs)]
        return joined, {i: _join([c[i] for c in captured], i in self.batched) for i in capture}

    def _outputs(self, values: dict, n: int, outputs=None) -> list[np.ndarray]:
        """Graph outputs (or ``outputs``), each batched [N, ...]; a per-sample constant (a SHAPE) is repeated N times."""
        return [values[i] if i in self.batched else np.broadcast_to(values[i], (n,) + values[i].shape)
                for i in (self.graph.outputs if outputs is None else outputs)]

    def _execute(self, steps, values: dict, constants=None) -> dict:
        consts = self.constants if not constants else {**self.constants, **constants}
        for step in steps:
            args = [None if i < 0 else values[i] if i in values else consts[i] for i in step.op.inputs]
            values[step.op.outputs[0]] = step.evaluate(step.params, args)
        return values

    def _execute_stacked(self, steps, values: dict, constants: dict, stack: int, stacked=None) -> set:
        """``_execute`` for ``run_suffix(..., stack=V)``; returns the tensors that carry V·N rows
        (``stacked``: those of earlier steps, when a caller runs the steps one at a time)."""
        consts = {**self.constants, **constants}
        stacked = set() if stacked is None else stacked
        for step in steps:
            op = step.op
            varying = [i in stacked or (i in constants and np.ndim(constants[i]) == len(self.graph.tensors[i].shape) + 1)
                       for i in op.inputs]
            args = [None if i < 0 else values[i] if i in values else consts[i] for i in op.inputs]
            if not any(varying):  # the same for every variant: computed once
                values[op.outputs[0]] = step.evaluate(step.params, args)
                continue
            shared = [i in values and i in self.batched and not v for i, v in zip(op.inputs, varying)]
            if any(shared) and step.shared is not None:
                values[op.outputs[0]] = step.shared(step.params, args, shared, stack)
            else:
                args = [np.concatenate([a] * stack) if s else a for a, s in zip(args, shared)]
                values[op.outputs[0]] = step.evaluate(step.params, args)
            stacked.add(op.outputs[0])  # (a SHAPE of a stacked tensor is marked too: harmless, never tiled)
        return stacked

    def split(self, cut: int) -> "SplitEngine":
        """Prefix = what the cut tensor depends on; suffix = the rest."""
        graph = self.graph
        if graph.tensors[cut].is_constant or cut not in self.batched:
            raise ZoEdgeError(f"cannot split {graph.source} at tensor {cut}: it is not an activation")
        needed = {cut}  # the cut's ancestors form the prefix
        prefix_ops = set()
        for op in reversed(graph.ops):
            if any(o in needed for o in op.outputs):
                prefix_ops.add(op.index)
                needed.update(i for i in op.inputs if i >= 0)
        return SplitEngine(self, cut, prefix_ops)

    def split_frozen(self, trainable, outputs=None) -> "SplitEngine":
        """Prefix = every op that no trainable constant reaches; suffix = the ops a change of the
        trainable tensors can change. For an adapter beside a block this leaves the block itself in
        the prefix: only the adapter, the ADD and what follows run per zeroth-order probe.
        ``outputs``: the tensors ``run_suffix`` returns (default: the graph's); suffix ops they do not
        need (a SOFTMAX after the logits the learners read) are left out."""
        tainted = set(trainable)
        prefix_ops = set()
        for op in self.graph.ops:
            if any(i in tainted for i in op.inputs):
                tainted.update(op.outputs)
            else:
                prefix_ops.add(op.index)
        cuts = sorted({i for op in self.graph.ops if op.index not in prefix_ops for i in op.inputs
                       if i in self.batched and i not in tainted})
        if not cuts:
            raise ZoEdgeError(f"no activation feeds the trainable tensors of {self.graph.source}")
        return SplitEngine(self, cuts[0], prefix_ops, outputs)


class SplitEngine:
    """An engine in two parts: ``run_prefix`` once per sample, ``run_suffix`` many times."""

    def __init__(self, engine: Engine, cut: int, prefix_ops: set, outputs=None):
        graph = engine.graph
        self.engine = engine
        self.cut = cut
        self.outputs = list(graph.outputs if outputs is None else outputs)
        self.prefix = [s for s in engine.steps if s.op.index in prefix_ops]
        needed = set(self.outputs)  # the suffix ops the outputs depend on, walking back
        suffix = []
        for s in reversed([s for s in engine.steps if s.op.index not in prefix_ops]):
            if any(o in needed for o in s.op.outputs):
                suffix.append(s)
                needed.update(i for i in s.op.inputs if i >= 0)
        self.suffix = suffix[::-1]
        produced_before = set(graph.inputs) | {o for s in self.prefix for o in s.op.outputs}
        read_after = {i for s in self.suffix for i in s.op.inputs} | set(self.outputs)
        # the suffix reads the cut and whatever else the prefix made (a skip connection across the cut)
        self.boundary = [cut] + sorted((produced_before & read_after) - {cut})

    def run_prefix(self, inputs) -> dict[int, np.ndarray]:
        values = dict(zip(self.engine.graph.inputs, self.engine.check_inputs(inputs)))
        self.engine._execute(self.prefix, values)
        return {i: values[i] for i in self.boundary}

    def run_suffix(self, boundary: dict, capture=(), constants=None, stack: int = 1):
        """The suffix on the prefix's outputs. With ``stack`` = V > 1 the ``constants`` given as
        [V, *shape] are V variants of those tensors (2q zeroth-order probes) and the boundary's N
        samples are shared by all of them: the outputs (and captures) are V·N rows, variant-major,
        the same bytes as a run on the boundary tiled V times (``Engine``'s variant weights), but an
        op computes once what does not depend on the variants, and an op whose weights vary reads
        its shared input once (``Kernel.shared``)."""
        values = dict(boundary)
        n = boundary[self.cut].shape[0]
        if stack == 1:
            self.engine._execute(self.suffix, values, constants)
            return self.engine._outputs(values, n, self.outputs), {i: values[i] for i in capture}
        stacked = self.engine._execute_stacked(self.suffix, values, constants or {}, stack)

        def rows(i):
            if i in stacked or i not in self.engine.batched:
                return values[i]
            return np.concatenate([values[i]] * stack)  # computed once, shared by every variant

        outputs = self.engine._outputs({i: rows(i) for i in self.outputs}, n * stack, self.outputs)
        return outputs, {i: rows(i) for i in capture}
