"""Learner settings: one dataclass, checked once, readable from flags and from a TOML file.

Defaults follow the public ZO-FC reference (DESIGN.md §4) where it has one — q, momentum 0.9, lr 0.01,
clip 1.0, fc_epochs = half the epochs — scaled to our task sizes (a few hundred samples per task).
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from zo_edge.errors import ZoEdgeError

METHODS = {
    "zo-fc": "zeroth-order updates on the adapter, first-order on the classifier for the first fc_epochs",
    "fo": "backprop on adapter and classifier (in int8 mode: float gradients at the int8 weights)",
    "zo": "zeroth-order updates on adapter and classifier",
    "head": "first-order updates on the classifier only",
    "frozen": "no training after pretraining (the floor)",
}
MODES = {
    "float": "float32 master weights, the reference algorithm step for step",
    "int8": "device mode: int8 graph engine, integer state, fixed-point loss and updates",
}
MASTERS = ("int8", "int16")  # stored precision of trainable int8 weights in int8 mode


@dataclass
class LearnerConfig:
    method: str = "zo-fc"
    mode: str = "int8"
    q: int = 4  # queries (Rademacher directions) per step
    epsilon: float | None = None  # perturbation size; None: 1e-3 (float) / one quantisation step (int8)
    lr: float = 0.01  # zeroth-order (adapter) learning rate; also fo's
    fc_lr: float = 0.05  # classifier learning rate (first order); the reference's 0.01 barely moves ~100 steps per task
    momentum: float = 0.9  # 0 turns momentum (and its RAM) off
    clip: float = 1.0  # gradient-norm clip of the zeroth-order gradient; 0 turns it off
    epochs: int = 10
    fc_epochs: int | None = None  # zo-fc: epochs the classifier trains before it is frozen; None: epochs // 2
    batch_size: int = 48
    master: str = "int16"  # int8 mode: "int16" keeps a 16-bit master copy of int8 weights, "int8" none
    seed: int = 0

    @property
    def fc_epochs_resolved(self) -> int:
        return self.epochs // 2 if self.fc_epochs is None else self.fc_epochs

    def trains_classifier(self, epoch: int) -> bool:
        """Whether the classifier takes its first-order step in this epoch of a task (zo-fc: the first
        fc_epochs; head: always; the others never)."""
        return self.method == "head" or (self.method == "zo-fc" and epoch < self.fc_epochs_resolved)

    def to_json(self) -> dict:
        return {**asdict(self), "fc_epochs": self.fc_epochs_resolved}

    def check(self) -> "LearnerConfig":
        """Raise a one-line ZoEdgeError naming the first bad option; return self."""
        if self.method not in METHODS:
            raise ZoEdgeError(f"unknown method {self.method!r} (--method); choose one of {', '.join(METHODS)}")
        if self.mode not in MODES:
            raise ZoEdgeError(f"unknown mode {self.mode!r} (--mode); choose one of {', '.join(MODES)}")
        if self.master not in MASTERS:
            raise ZoEdgeError(f"unknown master precision {self.master!r} (--master); choose int8 or int16")
        _integer(self.q, "q", 1, "one query is the minimum (the reference uses 1 to 32)")
        _integer(self.epochs, "epochs", 0)
        _integer(self.batch_size, "batch-size", 1)
        _integer(self.seed, "seed", 0)
        if self.fc_epochs is not None:
            _integer(self.fc_epochs, "fc-epochs", 0)
        if self.epsilon is not None and not (_number(self.epsilon, "epsilon") > 0):
            raise ZoEdgeError(f"--epsilon must be > 0 (got {self.epsilon}); the reference uses 1e-3")
        for name in ("lr", "fc_lr"):
            if not _number(getattr(self, name), name) > 0:
                raise ZoEdgeError(f"--{name.replace('_', '-')} must be > 0 (got {getattr(self, name)})")
        if not 0 <= _number(self.momentum, "momentum") < 1:
            raise ZoEdgeError(f"--momentum must be in [0, 1) (got {self.momentum}); 0 turns it off")
        if not (_number(self.clip, "clip") == 0 or self.clip >= 1e-6):  # int8 mode holds the clip in Q20
            raise ZoEdgeError(f"--clip must be 0 (off) or >= 1e-6 (got {self.clip})")
        return self


def _integer(value, name: str, low: int, hint: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ZoEdgeError(f"--{name} must be an integer >= {low} (got {value!r}){'; ' + hint if hint else ''}")


def _number(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ZoEdgeError(f"--{name.replace('_', '-')} must be a number (got {value!r})")
    return float(value)


def read_toml(path) -> dict:
    """Options from a TOML file (keys as in LearnerConfig, dashes or underscores; plus ``seeds``)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ZoEdgeError(f"config file {path} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ZoEdgeError(f"config file {path} is not valid TOML: {exc}") from None
    data = data.get("simulate", data)  # a [simulate] table or top-level keys
    known = {f.name for f in fields(LearnerConfig)} | {"seeds"}
    options = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name not in known:
            raise ZoEdgeError(f"{path}: unknown option {key!r}; known: {', '.join(sorted(known))}")
        options[name] = value
    return options
