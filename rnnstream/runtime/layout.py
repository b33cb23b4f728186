"""Between the caller's layout and the model's: checks, casts and transposes of inputs and outputs.

Callers always use ``[batch, time, features...]`` (``[batch, features...]`` for one step); the
model may put batch and time anywhere, or lack them. Everything here is computed once per model so
that the per-step path only does what the call needs.
"""

from __future__ import annotations

import numpy as np

from rnnstream.errors import InputError
from rnnstream.runtime.signature import TensorSpec

__all__ = ["InputLayout", "OutputLayout"]


def _labels(spec: TensorSpec) -> list[str]:
    """Axis labels of the model's tensor: "b", "t", then "f0", "f1", ... for features."""
    labels, features = [], 0
    for axis in range(len(spec.shape)):
        if axis == spec.batch_axis:
            labels.append("b")
        elif axis == spec.time_axis:
            labels.append("t")
        else:
            labels.append(f"f{features}")
            features += 1
    return labels


def _permutation(source: list[str], target: list[str]) -> tuple[int, ...] | None:
    perm = tuple(source.index(label) for label in target)
    return None if perm == tuple(range(len(perm))) else perm


class InputLayout:
    """Checks a caller's frames and puts them in the model's layout and dtype."""

    def __init__(
        self, spec: TensorSpec, check_finite: bool = True, num_tokens: int | None = None
    ) -> None:
        self.spec = spec
        self.num_tokens = num_tokens
        self.name = spec.name
        self.dtype = np.dtype(spec.dtype)
        self.check_finite = check_finite and self.dtype.kind == "f"
        model = _labels(spec)
        self.frame_shape = tuple(d for d, label in zip(spec.shape, model) if label.startswith("f"))
        self.has_time = spec.time_axis is not None
        self.has_batch = spec.batch_axis is not None
        features = [label for label in model if label.startswith("f")]
        caller = ["b", "t", *features]
        self._drop_batch = not self.has_batch
        if self._drop_batch:
            caller.remove("b")
        self._step_perm = _permutation(caller, model) if self.has_time else None
        step_caller = [label for label in caller if label != "t"]
        self._flat_perm = _permutation(step_caller, [m for m in model if m != "t"])
        self._time_index = model.index("t") if self.has_time else None

    def describe(self, rows: int | None, time: bool) -> list[object]:
        lead: list[object] = [] if rows is None else [rows]
        return [*lead, *(["time"] if time else []), *self.frame_shape]

    def convert(self, x: object, rows: int, single: bool, time: bool) -> np.ndarray:
        """``x`` as ``[rows, (T,) frame...]`` (no leading rows axis when ``single``) → model."""
        arr = np.asarray(x)
        kind = arr.dtype.kind
        if kind not in "biuf" or (self.dtype.kind in "iu" and kind == "f"):
            raise InputError(f"input {self.name!r}: expected {self.dtype}, got {arr.dtype}")
        if single:
            arr = arr[None]
        lead = 2 if time else 1
        if not self._shape_ok(arr.shape, rows, lead):
            want = self.describe(None if single else rows, time)
            got = list(arr.shape[1:] if single else arr.shape)
            raise InputError(f"input {self.name!r}: expected shape {want}, got {got}")
        if time and arr.shape[1] == 0:
            raise InputError(f"input {self.name!r}: the chunk is empty (0 time steps)")
        if arr.dtype != self.dtype:
            arr = arr.astype(self.dtype)
        if self.check_finite and not np.isfinite(arr).all():
            raise InputError(f"input {self.name!r}: contains NaN or infinity")
        if (
            self.num_tokens is not None
            and arr.size
            and (arr.min() < 0 or arr.max() >= self.num_tokens)
        ):
            raise InputError(
                f"input {self.name!r}: token ids must be in [0, {self.num_tokens}), "
                f"got {int(arr.min())}..{int(arr.max())}"
            )
        if self._drop_batch:
            arr = arr[0]
        if not time:
            if self.has_time:
                arr = arr[:, None] if not self._drop_batch else arr[None]
                perm = self._step_perm
            else:
                perm = self._flat_perm
        else:
            perm = self._step_perm
        return np.ascontiguousarray(arr.transpose(perm)) if perm else arr

    def _shape_ok(self, shape: tuple[int, ...], rows: int, lead: int) -> bool:
        if len(shape) != lead + len(self.frame_shape) or shape[0] != rows:
            return False
        return all(
            not isinstance(want, int) or got == want
            for got, want in zip(shape[lead:], self.frame_shape)
        )


class OutputLayout:
    """Puts a model output back in the caller's ``[batch, (time,) ...]`` layout."""

    def __init__(self, spec: TensorSpec) -> None:
        self.spec = spec
        model = _labels(spec)
        caller = [label for label in ("b", "t") if label in model]
        caller += [label for label in model if label.startswith("f")]
        self._perm = _permutation(model, caller)
        self.has_time = spec.time_axis is not None
        self.has_batch = spec.batch_axis is not None

    def convert(self, y: np.ndarray, single: bool, step: bool) -> np.ndarray:
        """Model output → ``[rows, (T,) ...]``; one step drops T; ``single`` drops rows."""
        if self._perm:
            y = y.transpose(self._perm)
        if not self.has_batch:
            y = y[None]
        if step and self.has_time:
            y = y[:, 0]
        return y[0] if single else y
