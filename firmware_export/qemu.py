"""Run the exported example app, in qemu-system-arm or on the host, and read what it printed.

``run_qemu`` runs an ELF on an MPS2 board with semihosting and ``-icount shift=10``, always under a
timeout (a firmware that hangs, e.g. with its stack outside RAM, must not hang the caller);
``run_host`` runs a host build; ``parse_output`` turns the app's line records (documented in
templates/app_main.c.j2) into numbers, with instruction counts from the FPGAIO counter's ticks.

Counting: under ``-icount shift=10`` each instruction is 2^10 ns of virtual time, and the FPGAIO
counter advances 25.6 ticks per instruction at 25 MHz (mps2) or 20.48 at 20 MHz (mps2-an505,
mps3-an547); the app reports which as ticks per 100 instructions. Ticks between two reads are floor
differences, so they may differ by one from run to run (the counter's phase against the instruction
clock), but round(ticks / 25.6) is the exact instruction count: the rounding error is below one tick,
less than half an instruction.

Console: QEMU 7.2 writes the semihosting console to its stderr unless told otherwise, mixed with its
own messages; the command line below sends it to stdout through a chardev and turns the (unused)
UART and monitor off, so stdout is the app's output alone and stderr is QEMU's.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from firmware_export.board import APT_LINE, BOARDS
from zo_edge.errors import ZoEdgeError

QEMU = "qemu-system-arm"
ICOUNT_SHIFT = 10


@dataclass
class RunResult:
    stdout: str  # the app's output
    stderr: str  # QEMU's (or the host program's) own messages
    status: int  # exit status: the app's, through semihosting
    command: list


def qemu_command(elf, board: str) -> list[str]:
    machine = BOARDS[board].machine if board in BOARDS else None
    if machine is None:
        known = ", ".join(b.name for b in BOARDS.values() if b.machine)
        raise ZoEdgeError(f"{board!r} is not a QEMU board; known: {known}")
    return [QEMU, "-M", machine, "-nographic", "-serial", "none", "-monitor", "none",
            "-chardev", "stdio,id=zoedge", "-semihosting-config", "enable=on,target=native,chardev=zoedge",
            "-icount", f"shift={ICOUNT_SHIFT}", "-kernel", str(elf)]


def _run(command: list, timeout_s: float, on_timeout: str) -> RunResult:
    # own process group, so a timeout kills QEMU and anything it started
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, errors="replace", start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.communicate()
        raise ZoEdgeError(on_timeout) from None
    return RunResult(out, err, proc.returncode, list(command))


def _seconds(timeout_s: float) -> str:
    return f"{timeout_s:g}"


def run_qemu(elf, board: str = "mps2-an386", timeout_s: float = 60) -> RunResult:
    """Run ``elf`` on a QEMU MPS2 board; return its output and exit status. ZoEdgeError when QEMU is
    missing, the ELF is missing or QEMU does not finish within ``timeout_s`` (it is then killed)."""
    if shutil.which(QEMU) is None:
        raise ZoEdgeError(f"{QEMU} is not installed; install it with: {APT_LINE}")
    if not Path(elf).is_file():
        raise ZoEdgeError(f"no firmware ELF at {elf}; build it first")
    command = qemu_command(elf, board)
    result = _run(command, timeout_s, f"QEMU did not finish within {_seconds(timeout_s)} s "
                                      "(the firmware may hang: stack outside RAM?)")
    if result.status != 0 and result.stderr.strip():
        first = result.stderr.strip().splitlines()[-1]
        if first.startswith(QEMU):
            raise ZoEdgeError(f"QEMU failed: {first}")
    return result


def run_host(exe, timeout_s: float = 60) -> RunResult:
    """Run a host build of the app under a timeout; return its output and exit status."""
    if not Path(exe).is_file():
        raise ZoEdgeError(f"no host program at {exe}; build it first")
    return _run([str(exe)], timeout_s, f"the host build did not finish within {_seconds(timeout_s)} s")


# -- the app's output -----------------------------------------------------------------------------------
@dataclass
class AppOutput:
    board: str = ""
    cpu: str = ""
    ticks_per_100: int = 0  # counter ticks per 100 instructions; 0: no instruction counter
    num_samples: int = 0
    num_steps: int = 0
    calibration: dict = field(default_factory=dict)  # iterations -> ticks
    empty_ticks: int = 0
    logits: dict = field(default_factory=dict)  # sample -> bytes
    infer_ticks: dict = field(default_factory=dict)  # sample -> ticks
    op_ticks: dict = field(default_factory=dict)  # op index -> ticks (sample 0, one op at a time)
    step_ticks: dict = field(default_factory=dict)  # step -> ticks
    phase_instructions: dict = field(default_factory=dict)  # step -> {phase: instructions}, counted on the device
    states: dict = field(default_factory=dict)  # step -> bytes
    stack_bytes: int = 0
    errors: list = field(default_factory=list)
    status: int | None = None  # the X line; None: the app never got there

    @property
    def counts_instructions(self) -> bool:
        return self.ticks_per_100 > 0

    def instructions(self, ticks: int) -> int:
        """Instructions in an interval of ``ticks``, the measurement's own cost (I empty) subtracted."""
        return self._exact(ticks) - self._exact(self.empty_ticks)

    def _exact(self, ticks: int) -> int:
        if not self.counts_instructions:
            raise ZoEdgeError(f"the {self.board} build has no instruction counter")
        value = ticks * 100 / self.ticks_per_100
        count = round(value)
        if abs(value - count) * self.ticks_per_100 / 100 >= 1:  # a floor difference is within one tick
            raise ZoEdgeError(f"{ticks} counter ticks are not a whole number of instructions: "
                              f"was QEMU run with -icount shift={ICOUNT_SHIFT}?")
        return count

    @property
    def infer_instructions(self) -> dict:
        return {i: self.instructions(t) for i, t in self.infer_ticks.items()}

    @property
    def op_instructions(self) -> dict:
        return {i: self.instructions(t) for i, t in self.op_ticks.items()}

    @property
    def step_instructions(self) -> dict:
        return {s: self.instructions(t) for s, t in self.step_ticks.items()}

    def calibration_instructions(self) -> int | None:
        """Instructions between the two calibration loops' counts (2 per iteration expected)."""
        if len(self.calibration) < 2:
            return None
        (n1, t1), (n2, t2) = sorted(self.calibration.items())[:2]
        return self._exact(t2) - self._exact(t1)


def parse_output(text: str) -> AppOutput:
    """The records of app_main.c (see its header comment); ZoEdgeError on a line that is not one."""
    out = AppOutput()
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split(" ")
        tag = fields[0]
        try:
            if tag == "H":
                out.board, out.cpu = fields[1], fields[2]
                out.ticks_per_100, out.num_samples, out.num_steps = (int(v) for v in fields[3:6])
            elif tag == "K":
                out.calibration[int(fields[1])] = int(fields[2])
            elif tag == "I" and fields[1] == "empty":
                out.empty_ticks = int(fields[2])
            elif tag == "I" and fields[1] == "infer":
                out.infer_ticks[int(fields[2])] = int(fields[3])
            elif tag == "O":
                out.op_ticks[int(fields[1])] = int(fields[2])
            elif tag == "L":
                out.logits[int(fields[1])] = bytes.fromhex(fields[2])
            elif tag == "T":
                out.step_ticks[int(fields[1])] = int(fields[2])
            elif tag == "P":
                out.phase_instructions.setdefault(int(fields[1]), {})[fields[2]] = int(fields[3])
            elif tag == "W":
                out.states[int(fields[1])] = bytes.fromhex(fields[2])
            elif tag == "S":
                out.stack_bytes = int(fields[1])
            elif tag == "E":
                out.errors.append(line[2:])
            elif tag == "X":
                out.status = int(fields[1])
            else:
                raise ValueError(tag)
        except (ValueError, IndexError):
            raise ZoEdgeError(f"line {number} of the firmware output is not a record: {line[:80]!r}") from None
    return out
