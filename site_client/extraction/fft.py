"""Linear convolution through real FFTs: avoids importing scipy.signal (slow import, big module)."""

from __future__ import annotations

import numpy as np
from scipy import fft


def convolve_same_many(images: list[np.ndarray], kernel: np.ndarray) -> list[np.ndarray]:
    """Linear convolution of each image with one odd-sized kernel, cropped centred to the image's shape.

    The kernel's transform is computed once and shared; zero padding to image + kernel - 1 avoids wrap-around.
    """
    shape = images[0].shape
    full = [s + k - 1 for s, k in zip(shape, kernel.shape)]
    fast = [fft.next_fast_len(n, real=True) for n in full]
    axes = list(range(kernel.ndim))
    kernel_ft = fft.rfftn(kernel, fast, axes=axes)
    start = [(k - 1) // 2 for k in kernel.shape]
    crop = tuple(slice(s, s + n) for s, n in zip(start, shape))
    return [fft.irfftn(fft.rfftn(image, fast, axes=axes) * kernel_ft, fast, axes=axes)[crop] for image in images]


def convolve_same(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Convolution cropped to ``image``'s shape, centred (odd-sized kernel)."""
    return convolve_same_many([image], kernel)[0]
