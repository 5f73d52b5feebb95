"""The golden reference: TensorFlow Lite Micro's Python interpreter.

TFLM's reference kernels are what runs on a Cortex-M, so every byte the numpy engine produces is
checked against them (DESIGN.md §3). TFLM takes one sample at a time; ``TflmOracle.run`` loops over
the batch so that its results line up with the engine's batched ones.
"""

from __future__ import annotations

import numpy as np

from zo_edge.errors import ZoEdgeError


def _runtime():
    try:
        from tflite_micro.python.tflite_micro import runtime
    except ImportError as exc:  # pragma: no cover - depends on the platform's wheels
        raise ZoEdgeError(
            f"the TFLM interpreter is not importable ({exc}); install it with `pip install tflite-micro` "
            "(x86-64 Linux wheels only)"
        ) from None
    return runtime


class TflmOracle:
    """Runs a .tflite flatbuffer sample by sample in the TFLM interpreter.

    ``intermediates=True`` preserves every tensor so that ``run`` can return all of them; TFLM
    otherwise reuses arena memory and only the outputs are meaningful.
    """

    def __init__(self, model_bytes: bytes, intermediates: bool = False, arena_size: int | None = None):
        runtime = _runtime()
        config = (
            runtime.InterpreterConfig.kPreserveAllTensors
            if intermediates
            else runtime.InterpreterConfig.kAllocationRecording
        )
        size = arena_size or max(16 * len(model_bytes), 1 << 20)
        try:
            self._interpreter = runtime.Interpreter.from_bytes(
                bytes(model_bytes), arena_size=size, intrepreter_config=config
            )
        except RuntimeError as exc:  # TFLM refuses a model our checks let through: say so in one line
            raise ZoEdgeError(f"the TFLM interpreter refuses the model ({_first_line(exc)}); it cannot serve as "
                              "the reference for it") from None
        self.intermediates = intermediates
        from zo_edge.litert import schema

        self.num_outputs = schema().Model.GetRootAs(bytes(model_bytes), 0).Subgraphs(0).OutputsLength()

    def run(self, inputs, tensor_indices=()):
        """Run every sample of a batch.

        ``inputs`` is one array [N, ...] or a list of them (one per graph input). Returns
        ``(outputs, tensors)``: the list of graph outputs stacked to [N, ...], and a dict mapping each
        index in ``tensor_indices`` to its values stacked the same way (needs ``intermediates``).
        """
        if isinstance(inputs, np.ndarray):
            inputs = [inputs]
        if tensor_indices and not self.intermediates:
            raise ValueError("reading intermediate tensors needs TflmOracle(..., intermediates=True)")
        n = inputs[0].shape[0]
        outputs, tensors = [], {i: [] for i in tensor_indices}
        for s in range(n):
            for k, x in enumerate(inputs):
                self._interpreter.set_input(np.ascontiguousarray(x[s : s + 1]), k)
            try:
                self._interpreter.invoke()
            except RuntimeError as exc:
                raise ZoEdgeError(f"the TFLM interpreter failed on sample {s} ({_first_line(exc)})") from None
            outputs.append([np.array(self._interpreter.get_output(k)) for k in range(self.num_outputs)])
            for i in tensor_indices:
                tensors[i].append(np.array(self._interpreter.GetTensor(i, 0)["tensor_data"]))
        stacked = [_stack([o[k] for o in outputs]) for k in range(self.num_outputs)] if n else []
        return stacked, {i: np.stack(v) for i, v in tensors.items()}


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _stack(per_sample: list[np.ndarray]) -> np.ndarray:
    """Join per-sample results on their batch axis of 1, or stack those that have none (a SHAPE)."""
    if per_sample[0].ndim and per_sample[0].shape[0] == 1:
        return np.concatenate(per_sample)
    return np.stack(per_sample)
