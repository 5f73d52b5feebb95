"""Learner settings: one dataclass, checked once, readable from flags and from a TOML file.

Defaults follow the public ZO-FC reference (DESIGN.md §4) where it has one — q, momentum 0.9, lr 0.01,
clip 1.0, fc_epochs = half the epochs — scaled to our task sizes (a few hundred samples per task).
"""

from __future__ import annotations

import math
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
LR_SCHEDULES = {
    "constant": "every epoch at the learning rate",
    "cosine": "cosine decay over a task's epochs, restarting each task: lr (1 + cos(pi e / E)) / 2 in epoch e of E "
              "(PyTorch's CosineAnnealingLR stepped per epoch, as the reference; E = fc_epochs for zo-fc's classifier)",
}
LR_SCALE_BITS = 16  # int8 mode: the schedule's factor per epoch in Q16, one integer table for simulator and firmware


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
    fc_epochs: int | None = None  # zo-fc: epochs the classifier trains before it is frozen; None: max(1, epochs // 2)
    batch_size: int = 48
    master: str = "int16"  # int8 mode: "int16" keeps a 16-bit master copy of int8 weights, "int8" none
    lr_schedule: str = "constant"  # LR_SCHEDULES
    seed: int = 0

    @property
    def fc_epochs_resolved(self) -> int:
        """zo-fc's classifier epochs: as given, or half the epochs and at least one (so that a short
        run still trains its classifier instead of silently staying at the frozen floor)."""
        return max(1, self.epochs // 2) if self.fc_epochs is None else self.fc_epochs

    def trains_classifier(self, epoch: int) -> bool:
        """Whether the classifier takes its first-order step in this epoch of a task (zo-fc: the first
        fc_epochs; head: always; the others never)."""
        return self.method == "head" or (self.method == "zo-fc" and epoch < self.fc_epochs_resolved)

    def schedule_epochs(self, part: str) -> int:
        """The epochs a part ("adapters" or "classifier") trains per task: its cosine schedule's length."""
        if part == "classifier" and self.method == "zo-fc":
            return self.fc_epochs_resolved
        return self.epochs

    def lr_factor(self, part: str, epoch: int) -> float:
        """The learning-rate factor of ``part`` in ``epoch`` of a task (float mode, and the source of the table)."""
        if self.lr_schedule == "constant":
            return 1.0
        return 0.5 * (1.0 + math.cos(math.pi * min(epoch, self.schedule_epochs(part)) / self.schedule_epochs(part)))

    def lr_table_q16(self, part: str) -> list[int]:
        """int8 mode: the factor per epoch of a task as Q16 integers, made once here and exported as a table,
        so the simulator and the firmware multiply by the same numbers (65536 = 1.0)."""
        return [int(round(self.lr_factor(part, e) * (1 << LR_SCALE_BITS))) for e in range(self.schedule_epochs(part))]

    def lr_scale_q16(self, part: str, epoch: int) -> int:
        table = self.lr_table_q16(part)
        return table[min(epoch, len(table) - 1)]

    def to_json(self) -> dict:
        return {**asdict(self), "fc_epochs": self.fc_epochs_resolved}

    def check(self) -> "LearnerConfig":
        """Raise a one-line OptionError (a ZoEdgeError) naming the first bad option; return self.

        Every number must be finite and within its range (``RANGES``), and the combination must make
        sense: an option that does not apply to the method, or that would silently train nothing, is refused."""
        _choice(self.method, "method", METHODS)
        _choice(self.mode, "mode", MODES)
        _choice(self.master, "master", MASTERS)
        _choice(self.lr_schedule, "lr_schedule", LR_SCHEDULES)
        for name, (low, high, hint) in RANGES.items():
            value = getattr(self, name)
            if value is None:
                continue
            if name in INTEGERS:
                if isinstance(value, bool) or not isinstance(value, int):
                    raise OptionError(name, f"must be a whole number (got {value!r})")
            elif isinstance(value, bool) or not isinstance(value, (int, float)):
                raise OptionError(name, f"must be a number (got {value!r})")
            if not math.isfinite(value) or not low <= value <= high:
                raise OptionError(name, f"must be in [{low:g}, {high:g}] (got {value!r})" + (f"; {hint}" if hint else ""))
        if self.epsilon is not None and self.epsilon <= 0:
            raise OptionError("epsilon", f"must be > 0 (got {self.epsilon}); the reference uses 1e-3")
        for name in ("lr", "fc_lr"):
            if getattr(self, name) <= 0:
                raise OptionError(name, f"must be > 0 (got {getattr(self, name)})")
        if not (self.clip == 0 or self.clip >= 1e-6):  # int8 mode holds the clip in Q20
            raise OptionError("clip", f"must be 0 (off) or >= 1e-6 (got {self.clip})")
        if self.fc_epochs is not None:  # (other methods ignore it: a config file may serve several methods)
            if self.fc_epochs > self.epochs:
                raise OptionError("fc_epochs", f"{self.fc_epochs} exceeds the {self.epochs} epochs per task "
                                               "(--epochs); choose at most that")
            if self.fc_epochs == 0 and self.method == "zo-fc":
                raise OptionError("fc_epochs", "0 never trains zo-fc's classifier; use --method zo for a "
                                               "zeroth-order classifier, or at least 1")
        return self


class OptionError(ZoEdgeError):
    """A bad learner option. ``option`` is its LearnerConfig name, so that a caller can say where the
    value came from (a flag, or a config file's key)."""

    def __init__(self, option: str, detail: str):
        self.option, self.detail = option, detail
        super().__init__(f"--{option.replace('_', '-')} {detail}")


# name -> (lowest, highest, hint): every numeric option is finite and within these
RANGES = {
    "q": (1, 1024, "the reference uses 1 to 32"),
    "epsilon": (0, 1.0, "the reference uses 1e-3"),
    "lr": (0, 10.0, "the reference uses 0.01"),
    "fc_lr": (0, 10.0, "the default is 0.05"),
    "momentum": (0, 0.999, "0 turns momentum off"),
    "clip": (0, 1e6, "0 turns clipping off"),
    "epochs": (1, 100000, "use --method frozen to train nothing"),
    "fc_epochs": (0, 100000, ""),
    "batch_size": (1, 65536, ""),
    "seed": (0, 2**32 - 1, "the device's generator takes a 32-bit seed"),
}
INTEGERS = {"q", "epochs", "fc_epochs", "batch_size", "seed"}


def _choice(value, name: str, known) -> None:
    if value not in known:
        raise OptionError(name, f"{value!r} is unknown; choose one of {', '.join(known)}")


def read_toml(path) -> dict:
    """Options from a TOML file (keys as in LearnerConfig, dashes or underscores; plus ``seeds``)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ZoEdgeError(f"config file {path} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ZoEdgeError(f"config file {path} is not valid TOML: {' '.join(str(exc).split())}") from None
    except IsADirectoryError:
        raise ZoEdgeError(f"config file {path} is a folder; give a .toml file") from None
    data = data.get("simulate", data)  # a [simulate] table or top-level keys
    if not isinstance(data, dict):
        raise ZoEdgeError(f"{path}: [simulate] must be a table of options")
    known = {f.name for f in fields(LearnerConfig)} | {"seeds"}
    options = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name not in known:
            raise ZoEdgeError(f"{path}: unknown option {key!r}; known: {', '.join(sorted(known))}")
        options[name] = value
    return options
