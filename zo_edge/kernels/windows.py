"""Sliding windows shared by convolution and pooling: TFLM's padding rule and a strided patch view."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import as_strided

PADDING = {0: "SAME", 1: "VALID"}  # schema Padding values


@dataclass(frozen=True)
class Window:
    """Geometry of one spatial sliding window, prepared once per op."""

    kernel_h: int
    kernel_w: int
    stride_h: int
    stride_w: int
    dilation_h: int
    dilation_w: int
    pad_top: int
    pad_left: int
    out_h: int
    out_w: int

    def padded_size(self, in_h: int, in_w: int) -> tuple[int, int]:
        """Height and width of the input once padded so that every window lies inside it."""
        need_h = (self.out_h - 1) * self.stride_h + (self.kernel_h - 1) * self.dilation_h + 1
        need_w = (self.out_w - 1) * self.stride_w + (self.kernel_w - 1) * self.dilation_w + 1
        return max(in_h + self.pad_top, need_h), max(in_w + self.pad_left, need_w)


def _out_size(padding: str, size: int, kernel: int, stride: int, dilation: int) -> int:
    effective = (kernel - 1) * dilation + 1
    if padding == "SAME":
        return (size + stride - 1) // stride
    return (size + stride - effective) // stride


def _pad_before(stride: int, dilation: int, size: int, kernel: int, out: int) -> int:
    effective = (kernel - 1) * dilation + 1
    return max(0, ((out - 1) * stride + effective - size) // 2)


def make_window(padding_code: int, in_h: int, in_w: int, kernel_h: int, kernel_w: int,
                stride_h: int, stride_w: int, dilation_h: int = 1, dilation_w: int = 1) -> Window:
    """``ComputePaddingHeightWidth``: output size and the padding before the first row/column."""
    padding = PADDING[padding_code]
    out_h = _out_size(padding, in_h, kernel_h, stride_h, dilation_h)
    out_w = _out_size(padding, in_w, kernel_w, stride_w, dilation_w)
    return Window(
        kernel_h, kernel_w, stride_h, stride_w, dilation_h, dilation_w,
        _pad_before(stride_h, dilation_h, in_h, kernel_h, out_h),
        _pad_before(stride_w, dilation_w, in_w, kernel_w, out_w),
        out_h, out_w,
    )


def patches(x: np.ndarray, w: Window, fill) -> np.ndarray:
    """A [N, out_h, out_w, kernel_h, kernel_w, C] view of every window of x [N, H, W, C].

    Positions outside the input read ``fill``: TFLM skips them, which for a sum of offset inputs is
    the same as adding zeros and for a max the same as the smallest value.
    """
    n, h, width, c = x.shape
    padded_h, padded_w = w.padded_size(h, width)
    padded = np.pad(x, ((0, 0), (w.pad_top, padded_h - h - w.pad_top), (w.pad_left, padded_w - width - w.pad_left), (0, 0)),
                    constant_values=fill)
    s = padded.strides
    return as_strided(
        padded,
        shape=(n, w.out_h, w.out_w, w.kernel_h, w.kernel_w, c),
        strides=(s[0], s[1] * w.stride_h, s[2] * w.stride_w, s[1] * w.dilation_h, s[2] * w.dilation_w, s[3]),
        writeable=False,
    )


def valid_counts(w: Window, in_h: int, in_w: int) -> np.ndarray:
    """[out_h, out_w] number of window positions inside the input (the average pool's divisor)."""
    def counts(out, stride, pad, kernel, size):
        origin = np.arange(out) * stride - pad
        return np.minimum(kernel, size - origin) - np.maximum(0, -origin)

    return np.outer(counts(w.out_h, w.stride_h, w.pad_top, w.kernel_h, in_h),
                    counts(w.out_w, w.stride_w, w.pad_left, w.kernel_w, in_w))
