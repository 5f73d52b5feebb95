"""Continual-learning metrics, following PILOT (the library the ZO-FC reference code reports with).

The accuracy matrix R is T x T with R[t][i] = accuracy (percent) on task i's test set after training
task t (0-based). Only the lower triangle i <= t is defined: entries with i > t may be None, NaN,
any number (e.g. a zero-shot score) or missing from a ragged row — they are ignored. A missing or
NaN entry in the lower triangle is an error, because every metric below would silently change.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def _matrix(R) -> np.ndarray:
    """R as a float T x T array with NaN above the diagonal; rows may be ragged (row t: >= t+1 entries)."""
    rows = [list(row) for row in R]
    T = len(rows)
    if T == 0:
        raise ValueError("accuracy matrix is empty")
    M = np.full((T, T), np.nan)
    for t, row in enumerate(rows):
        if not t + 1 <= len(row) <= T:
            raise ValueError(f"row {t} of the accuracy matrix has {len(row)} entries, expected {t + 1}..{T}")
        for i in range(t + 1):  # the upper triangle is never read
            M[t, i] = np.nan if row[i] is None else float(row[i])
    if np.isnan(M[np.tril_indices(T)]).any():
        raise ValueError("accuracy matrix has a missing (None/NaN) entry on or below the diagonal")
    return M


def average_accuracy(seen_accuracy: Sequence[float]) -> float:
    """Mean over tasks t of the accuracy on all classes seen so far, measured after task t.

    Takes the per-task seen-class accuracies rather than R because that accuracy is over the pooled
    test samples of all seen tasks: it weights each task by its number of test samples, so it equals
    the mean of R's row t only when every task has the same test-set size.
    """
    if len(seen_accuracy) == 0:
        raise ValueError("no seen-class accuracies")
    return float(np.mean(seen_accuracy))


def last_accuracy(seen_accuracy: Sequence[float]) -> float:
    """Accuracy on all classes after the final task."""
    if len(seen_accuracy) == 0:
        raise ValueError("no seen-class accuracies")
    return float(seen_accuracy[-1])


def forgetting(R) -> float:
    """Mean over tasks i < T-1 of (best accuracy ever on i, over t >= i) - (accuracy on i at the end).

    The best is a max over all t including the last, so it can exceed R[i][i] when a task improves
    after it was learned, and forgetting is never negative. The final task is excluded (it cannot
    have been forgotten yet); with T = 1 there is nothing to average and forgetting is 0.0.
    """
    M = _matrix(R)
    if len(M) == 1:
        return 0.0
    best = np.nanmax(M[:, :-1], axis=0)  # column i holds R[i..T-1][i]; NaN above the diagonal ignored
    return float(np.mean(best - M[-1, :-1]))


def bwt(R) -> float:
    """Backward transfer: mean over tasks i < T-1 of R[T-1][i] - R[i][i].

    Negative means later learning hurt earlier tasks; positive means it helped. 0.0 for T = 1.
    """
    M = _matrix(R)
    if len(M) == 1:
        return 0.0
    return float(np.mean(M[-1, :-1] - np.diag(M)[:-1]))


def summarize(values: Sequence[float]) -> dict:
    """{"mean", "std", "per_seed"} of one metric over seeds.

    std is the sample standard deviation (ddof=1): with the handful of seeds a run uses, the
    population formula would understate the spread by a factor sqrt((n-1)/n). One seed: std = None
    (JSON null): no spread was measured, and printing "± 0.0" would claim one.
    """
    per_seed = [float(v) for v in values]
    if not per_seed:
        raise ValueError("no values to summarize")
    std = float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else None
    return {"mean": float(np.mean(per_seed)), "std": std, "per_seed": per_seed}


def accuracy_matrix_to_json(R) -> list[list[float | None]]:
    """R as nested lists of floats (T x T), with None where i > t (JSON has no NaN)."""
    M = _matrix(R)
    return [[None if math.isnan(v) else float(v) for v in row] for row in M.tolist()]
