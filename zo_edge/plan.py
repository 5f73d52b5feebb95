"""The adaptation plan: which tensors of the int8 graph train, and how (DESIGN.md §8, review b1).

A plan is data, written to run.json as ``"plan"`` and read by everything downstream — the learners,
the firmware export, the memory model — instead of fixed role names:

* ``adapters``: a list, in graph order. Each is the residual bottleneck ``x + up(relu(down(cut)))`` (or
  ``block(cut) + up(relu(down(cut)))`` beside a block): its cut (the input of ``down``), the weights and
  biases of ``down`` and ``up``, the hidden activation, the adapter's output, the other input of the
  ADD (``block_output``) and the ADD's output. ``kind`` is "conv1x1" or "dense".
* ``classifier``: the FULLY_CONNECTED op that makes the logits: its input (the features), weights,
  bias and output (``logits``). A SOFTMAX may follow it; ``output`` is the graph's output either way.
  ``kind`` is "dense" (weights and bias train) or "cosine" (the reference's cosine classifier: its
  input is an L2_NORMALIZATION's output, its bias is zero and stays so, and the weights are a scale σ
  times unit rows, ``zo_edge.learners.cosine``).
* ``keras``: for a run with a float Keras original, the layer names behind each trainable part
  (float mode needs them); ``None`` for a run made from a deployed .tflite.

Every trainable tensor has one role name, ``<part>.<weights|bias>`` with part ``adapter<i>.down``,
``adapter<i>.up`` or ``classifier``. ``Plan.trainables()`` lists them in one canonical order —
adapters in graph order (down weights, down bias, up weights, up bias), then the classifier — which is
the order of the learners' flat vectors and so the ``index`` coordinate of the random generator (the
firmware's too): it is fixed, and the firmware's state tag hashes it.

Methods are data too (``METHOD_RULES``): which parts each method trains, and by which rule — "zo"
(zeroth order), "fc" (first order on the classifier), "bp" (backprop). ``Plan.vectors(method)`` groups
the trainables into the vectors a learner updates together.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from zo_edge.errors import ZoEdgeError

PLAN_FORMAT = "zo-edge/plan@1"

# method -> {part: rule}; parts are "adapters" and "classifier"
METHOD_RULES = {
    "zo-fc": {"adapters": "zo", "classifier": "fc"},
    "zo": {"adapters": "zo", "classifier": "zo"},
    "head": {"classifier": "fc"},
    "fo": {"adapters": "bp", "classifier": "bp"},
    "frozen": {},
}


@dataclass(frozen=True)
class Adapter:
    name: str  # "adapter0", "adapter1", ... in graph order
    kind: str  # "conv1x1" or "dense"
    cut: int  # the activation down reads
    down_weights: int
    down_bias: int
    hidden: int  # relu(down(cut)): what up reads
    up_weights: int
    up_bias: int
    output: int  # up(hidden)
    block_output: int  # the ADD's other input (the cut itself for an adapter on a tensor)
    add_output: int
    keras: dict | None = None  # {"down": layer name, "up": layer name}

    def trainables(self) -> list[tuple[str, int]]:
        return [(f"{self.name}.down.weights", self.down_weights), (f"{self.name}.down.bias", self.down_bias),
                (f"{self.name}.up.weights", self.up_weights), (f"{self.name}.up.bias", self.up_bias)]


HEAD_KINDS = {
    "dense": "a Dense classifier: logits = W h + b, weights and bias train",
    "cosine": "the reference's cosine classifier: logits = sigma cos(h, w_c), unit rows and a scale sigma, no bias",
}


@dataclass(frozen=True)
class Classifier:
    input: int  # the features h (for a cosine head: the L2_NORMALIZATION's output)
    weights: int  # [classes, features] int8
    bias: int  # [classes] int32 (a cosine head's stays zero)
    logits: int  # the FULLY_CONNECTED's output
    keras: str | None = None  # the Dense layer's name
    kind: str = "dense"  # HEAD_KINDS

    def trainables(self) -> list[tuple[str, int]]:
        if self.kind == "cosine":  # sigma and the unit rows live in the learner; the graph holds sigma * rows
            return [("classifier.weights", self.weights)]
        return [("classifier.weights", self.weights), ("classifier.bias", self.bias)]


@dataclass(frozen=True)
class Plan:
    input: int  # the graph's input tensor
    output: int  # the graph's output (the logits, or a SOFTMAX of them)
    classifier: Classifier
    adapters: tuple[Adapter, ...] = field(default_factory=tuple)

    # -- what trains ------------------------------------------------------------------------------
    def trainables(self) -> list[tuple[str, int]]:
        """(role, tensor index) of every trainable tensor, in the canonical order (module docstring)."""
        out = [t for a in self.adapters for t in a.trainables()]
        return out + self.classifier.trainables()

    def roles(self) -> dict[str, int]:
        """role -> tensor index for every trainable tensor and the activations the learners read."""
        roles = dict(self.trainables())
        roles.update({"input": self.input, "output": self.output, "logits": self.classifier.logits,
                      "classifier.input": self.classifier.input, "classifier.bias": self.classifier.bias})
        for a in self.adapters:
            roles.update({f"{a.name}.cut": a.cut, f"{a.name}.hidden": a.hidden, f"{a.name}.output": a.output,
                          f"{a.name}.block_output": a.block_output, f"{a.name}.add_output": a.add_output})
        return roles

    def vectors(self, method: str) -> list[tuple[str, list[str]]]:
        """The groups of trainable roles a method updates together: [(rule, roles), ...], rules in the order
        zo, fc, bp (only those the method uses)."""
        try:
            rules = METHOD_RULES[method]
        except KeyError:
            raise ZoEdgeError(f"unknown method {method!r}; choose one of {', '.join(METHOD_RULES)}") from None
        groups: dict[str, list[str]] = {}
        for a in self.adapters:
            if "adapters" in rules:
                groups.setdefault(rules["adapters"], []).extend(role for role, _ in a.trainables())
        if "classifier" in rules:
            groups.setdefault(rules["classifier"], []).extend(role for role, _ in self.classifier.trainables())
        return [(rule, groups[rule]) for rule in ("zo", "fc", "bp") if rule in groups]

    def trainable_indices(self) -> list[int]:
        return [index for _, index in self.trainables()]

    @property
    def has_keras(self) -> bool:
        return self.classifier.keras is not None and all(a.keras for a in self.adapters)

    # -- storage ----------------------------------------------------------------------------------
    def to_json(self) -> dict:
        return {"format": PLAN_FORMAT, "input": self.input, "output": self.output,
                "classifier": asdict(self.classifier), "adapters": [asdict(a) for a in self.adapters]}

    @classmethod
    def from_json(cls, data, where: str = "the plan") -> "Plan":
        """A plan from run.json; a malformed one is a one-line ZoEdgeError naming the key."""
        if not isinstance(data, dict) or data.get("format") != PLAN_FORMAT:
            raise ZoEdgeError(f"{where} is not a zo-edge plan ({PLAN_FORMAT})")
        try:
            classifier = Classifier(**_fields(data["classifier"], Classifier, f"{where}: classifier"))
            adapters = tuple(Adapter(**_fields(a, Adapter, f"{where}: adapters[{i}]"))
                             for i, a in enumerate(data["adapters"]))
            plan = cls(input=data["input"], output=data["output"], classifier=classifier, adapters=adapters)
        except (KeyError, TypeError) as exc:
            raise ZoEdgeError(f"{where} lacks or misspells {exc}") from None
        for role, index in plan.roles().items():
            if isinstance(index, bool) or not isinstance(index, int):
                raise ZoEdgeError(f"{where}: {role} must be a tensor index, not {index!r}")
        return plan

    # -- checks against the graph ------------------------------------------------------------------
    def check(self, graph, where: str = "the plan") -> "Plan":
        """Every index in range and of the right kind, the shapes the learners and the firmware rely on.
        Raises a one-line ZoEdgeError naming the role; returns self."""
        n = len(graph.tensors)
        for role, index in self.roles().items():
            if not 0 <= index < n:
                raise ZoEdgeError(f"{where}: {role} points at tensor {index}, but the model has tensors 0..{n - 1}")
        if self.classifier.kind not in HEAD_KINDS:
            raise ZoEdgeError(f"{where}: the classifier kind {self.classifier.kind!r} is unknown; one of "
                              f"{', '.join(HEAD_KINDS)}")
        for role, index in self.trainables() + [("classifier.bias", self.classifier.bias)]:
            t = graph.tensors[index]
            want = np.int8 if role.endswith("weights") else np.int32
            if not t.is_constant or t.dtype != want or not t.is_quantized:
                raise ZoEdgeError(f"{where}: {role} should be a quantised constant {np.dtype(want).name} tensor, "
                                  f"but tensor {index} ({t.name}) is not")
        for role in ("input", "output", "logits", "classifier.input"):
            t = graph.tensors[self.roles()[role]]
            if t.is_constant or t.dtype != np.int8:
                raise ZoEdgeError(f"{where}: {role} should be an int8 activation, but tensor {t.index} ({t.name}) is not")
        if self.input not in graph.inputs or self.output not in graph.outputs:
            raise ZoEdgeError(f"{where}: its input/output are not the model's (tensors {graph.inputs} -> {graph.outputs})")
        c = self.classifier
        w, h, logits = graph.tensors[c.weights], graph.tensors[c.input], graph.tensors[c.logits]
        classes = w.shape[0] if len(w.shape) == 2 else None
        if (classes is None or int(np.prod(h.shape[1:])) != w.shape[1] or logits.shape[-1:] != (classes,)
                or graph.tensors[c.bias].shape != (classes,)):
            raise ZoEdgeError(f"{where}: the classifier {list(w.shape)} does not map its input {list(h.shape)} to "
                              f"its logits {list(logits.shape)}")
        if c.kind == "cosine":
            producer = graph.producer(c.input)
            if producer is None or producer.opcode != "L2_NORMALIZATION" or np.any(graph.tensors[c.bias].data):
                raise ZoEdgeError(f"{where}: a cosine classifier reads an L2_NORMALIZATION's output and has a zero "
                                  f"bias; tensor {c.input} is not such an output or its bias is not zero")
        for a in self.adapters:
            down, up = graph.tensors[a.down_weights], graph.tensors[a.up_weights]
            cut, out = graph.tensors[a.cut], graph.tensors[a.add_output]
            if down.shape[0] != up.shape[-1] or up.shape[0] != cut.shape[-1] or cut.shape != out.shape:
                raise ZoEdgeError(f"{where}: {a.name}'s down {list(down.shape)} and up {list(up.shape)} do not fit "
                                  f"its cut {list(cut.shape)}")
        return self


def _fields(data, cls, where: str) -> dict:
    if not isinstance(data, dict):
        raise ZoEdgeError(f"{where} must be an object")
    known = {f for f in cls.__dataclass_fields__}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ZoEdgeError(f"{where} has unknown keys {', '.join(unknown)}")
    return dict(data)
