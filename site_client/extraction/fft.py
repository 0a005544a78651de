"""Linear (full) convolution through real FFTs: avoids importing scipy.signal (slow import, big module)."""

from __future__ import annotations

import numpy as np
from scipy import fft


def convolve_full(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Full linear convolution of two real arrays of equal rank (same result as ``signal.fftconvolve(.., 'full')``)."""
    shape = [sa + sb - 1 for sa, sb in zip(a.shape, b.shape)]
    fast = [fft.next_fast_len(n, real=True) for n in shape]
    axes = list(range(a.ndim))
    out = fft.irfftn(fft.rfftn(a, fast, axes=axes) * fft.rfftn(b, fast, axes=axes), fast, axes=axes)
    return out[tuple(slice(0, n) for n in shape)]


def convolve_same(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Convolution cropped to ``image``'s shape, centred (odd-sized kernel)."""
    full = convolve_full(image, kernel)
    start = [(k - 1) // 2 for k in kernel.shape]
    return full[tuple(slice(s, s + n) for s, n in zip(start, image.shape))]
