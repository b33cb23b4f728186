"""Float comparisons for the tests: an absolute and a relative bound, both from the precision.

Two float32 computations of the same function (onnxruntime against numpy or PyTorch, a step
against a chunk, one batch row against a lone stream) differ by a few units in the last place of
the values they combine, whatever the CPU and BLAS. A bound relative to each element fails on
values near zero (a sum of large terms that cancel keeps the terms' absolute error), and a bound
absolute alone fails on large values. So every comparison here uses both:

- ``rtol``: a number of float32 ulps of each element;
- ``atol``: the same number of ulps of the largest magnitude in the expected tensor (at least 1),
  the scale of the terms an element near zero was computed from.

``KERNELS`` is for the same arithmetic through different kernels or orders (one step or many,
batched or alone). ``PARITY`` is the project's float32 parity bound (rnnstream.export.tolerance):
PyTorch against onnxruntime over long recurrences, where rounding compounds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["KERNELS", "PARITY", "Closeness", "assert_close"]

FLOAT32_EPS = float(np.finfo(np.float32).eps)  # 1.19e-7


@dataclass(frozen=True)
class Closeness:
    """How many float32 ulps two results may differ by, of each element and of the scale."""

    ulps: float

    @property
    def rtol(self) -> float:
        return self.ulps * FLOAT32_EPS


KERNELS = Closeness(ulps=64)  # rtol 7.6e-6
PARITY = Closeness(ulps=84)  # rtol 1e-5; atol 1e-5 at unit scale, as the parity record's


def assert_close(actual: object, desired: object, closeness: Closeness = KERNELS) -> None:
    """Assert ``actual`` matches ``desired`` within ``closeness`` (see the module docstring)."""
    desired = np.asarray(desired)
    scale = max(1.0, float(np.abs(desired).max())) if desired.size else 1.0
    np.testing.assert_allclose(
        actual, desired, rtol=closeness.rtol, atol=closeness.rtol * scale, equal_nan=False
    )
