"""Between the caller's layout and the model's: checks, casts and transposes of inputs and outputs.

Callers always use ``[batch, time, features...]`` (``[batch, features...]`` for one step); the
model may put batch and time anywhere, or lack them. Everything here is computed once per model so
that the per-step path only does what the call needs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from rnnstream.errors import InputError
from rnnstream.runtime.signature import TensorSpec

__all__ = ["InputLayout", "OutputLayout", "StepFrame", "as_array"]


def as_array(value: object, what: str) -> np.ndarray:
    """``value`` as an array; a ragged list or another non-array is an :class:`InputError`."""
    try:
        return np.asarray(value)
    except (ValueError, TypeError) as e:
        raise InputError(f"{what}: not a rectangular array of numbers ({e})") from None


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


def _all_finite(arr: np.ndarray) -> bool:
    """True when no element is NaN or infinite (a dot product first: cheap when all is well)."""
    return _flat_finite(arr.reshape(-1))


def _flat_finite(flat: np.ndarray) -> bool:
    """:func:`_all_finite` of a 1-D array: one BLAS dot product (~0.6 µs whatever the size) is
    finite only when every element is; an overflow of the sum (huge but finite values) falls back
    to the exact element-wise check."""
    return math.isfinite(flat.dot(flat)) or bool(np.isfinite(flat).all())


def _ids_in_range(arr: np.ndarray, num_tokens: int) -> bool:
    """True when every token id is in ``[0, num_tokens)``."""
    if arr.ndim == 0:
        return 0 <= int(arr) < num_tokens
    return bool(arr.min() >= 0 and arr.max() < num_tokens)


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
        # A time axis fixed at 1 takes one step per run: a chunk runs step by step
        self.takes_chunks = self.has_time and spec.shape[spec.time_axis] != 1
        self.has_batch = spec.batch_axis is not None
        features = [label for label in model if label.startswith("f")]
        caller = ["b", "t", *features]
        self._drop_batch = not self.has_batch
        if self._drop_batch:
            caller.remove("b")
        self._step_perm = _permutation(caller, model) if self.has_time else None
        step_caller = [label for label in caller if label != "t"]
        self._flat_perm = _permutation(step_caller, [m for m in model if m != "t"])
        # One step's data is in the same order as the model's whenever batch precedes features
        # (a size-1 time axis can sit anywhere), so a reshape is enough.
        no_time = [label for label in model if label != "t"]
        self._perm_needed = _permutation(step_caller, no_time) is not None
        self._fast: dict[tuple[int, bool], tuple[tuple[int, ...], tuple[int, ...]]] = {}
        # The dtype kinds convert() casts without a word: numbers into floats, integers into
        # integers, booleans into booleans
        want = self.dtype.kind
        self.castable_kinds = "b" if want == "b" else "iu" if want in "iu" else "fiu"

    def step_shapes(self, rows: int, single: bool) -> tuple[tuple, tuple] | None:
        """(caller shape, model shape) of one step, when every frame dimension is fixed."""
        if not all(isinstance(d, int) for d in self.frame_shape):
            return None
        caller = tuple(self.frame_shape) if single else (rows, *self.frame_shape)
        model = []
        features = iter(self.frame_shape)
        for axis in range(len(self.spec.shape)):
            if axis == self.spec.batch_axis:
                model.append(rows)
            elif axis == self.spec.time_axis:
                model.append(1)
            else:
                model.append(next(features))
        return caller, tuple(model)

    def convert_step(self, x: object, rows: int, single: bool) -> np.ndarray:
        """:meth:`convert` for one step, with a fast path for the common well-formed frame."""
        key = (rows, single)
        if key not in self._fast:
            self._fast[key] = self.step_shapes(rows, single) or ((), ())
        caller, model = self._fast[key]
        try:
            arr = np.asarray(x)
        except (ValueError, TypeError):  # a ragged list: convert words the error
            return self.convert(x, rows, single, time=False)
        if (
            arr.shape != caller
            or arr.dtype != self.dtype
            or self._perm_needed
            or (self.check_finite and not _all_finite(arr))
            or (self.num_tokens is not None and not _ids_in_range(arr, self.num_tokens))
        ):
            return self.convert(x, rows, single, time=False)
        return arr.reshape(model)

    def step_frame(self, buffer: np.ndarray, rows: int, single: bool) -> StepFrame | None:
        """A :class:`StepFrame` over ``buffer`` (one step in the model's layout), or None when
        the caller's frame is no view of it (a model without a batch axis streamed with more
        rows than one)."""
        labels = _labels(self.spec)
        dropped = {"t", "b"} if single else {"t"}
        index = tuple(0 if label in dropped else slice(None) for label in labels)
        view = buffer[(*index, ...)]  # the Ellipsis keeps a view where all axes are dropped
        kept = [label for label in labels if label not in dropped]
        if not single and not self.has_batch:
            view, kept = view[None], ["b", *kept]
        caller = ([] if single else ["b"]) + [label for label in labels if label[0] == "f"]
        view = view.transpose([kept.index(label) for label in caller])
        if view.shape != self.step_shapes(rows, single)[0]:
            return None
        return StepFrame(self, buffer, view, rows, single)

    def describe(self, rows: int | None, time: bool) -> list[object]:
        lead: list[object] = [] if rows is None else [rows]
        return [*lead, *(["time"] if time else []), *self.frame_shape]

    def convert(self, x: object, rows: int, single: bool, time: bool) -> np.ndarray:
        """``x`` as ``[rows, (T,) frame...]`` (no leading rows axis when ``single``) → model.

        Booleans are neither frames nor token ids (only a boolean input takes them), and floats
        are no token ids.
        """
        if isinstance(x, Mapping):
            raise InputError(
                f"input {self.name!r}: expected its frames as one array, got a dict with keys "
                f"{sorted(map(str, x))}; the stream feeds the model's other inputs (states, "
                "lengths, constants) itself"
            )
        arr = as_array(x, f"input {self.name!r}")
        if arr.dtype.kind not in self.castable_kinds:
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
        if 0 in arr.shape[lead:]:
            raise InputError(
                f"input {self.name!r}: the frame is empty (shape {list(arr.shape[lead:])})"
            )
        # Token ids are checked before the cast, so an id that would wrap shows its real value.
        if (
            self.num_tokens is not None
            and arr.size
            and (arr.min() < 0 or arr.max() >= self.num_tokens)
        ):
            raise InputError(
                f"input {self.name!r}: token ids must be in [0, {self.num_tokens}), "
                f"got {int(arr.min())}..{int(arr.max())}"
            )
        given = arr
        if arr.dtype != self.dtype:
            with np.errstate(over="ignore"):  # an overflow to infinity is reported just below
                arr = arr.astype(self.dtype)
        if self.check_finite and not _all_finite(arr):
            beyond = bool(np.isfinite(given).all())
            reason = f"values beyond {self.dtype}'s range" if beyond else "NaN or infinity"
            raise InputError(f"input {self.name!r}: contains {reason}")
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


class StepFrame:
    """One step's input kept in a buffer that onnxruntime reads in place (bound once).

    :meth:`fill` copies the caller's frame into it through a view in the caller's layout (the
    copy is also the transpose and the cast), then checks it; a frame that is not the common
    well-formed case goes through :meth:`InputLayout.convert`, which words the error. The
    buffer is no state: a rejected frame may leave it half written, the stream is unchanged.
    """

    def __init__(
        self, layout: InputLayout, buffer: np.ndarray, view: np.ndarray, rows: int, single: bool
    ) -> None:
        self._layout = layout
        self._buffer = buffer
        self._view = view
        self._flat = buffer.reshape(-1)  # a view: the buffer is contiguous
        self._shape = view.shape
        self._dtype = buffer.dtype
        self._kinds = layout.castable_kinds
        self._check_finite = layout.check_finite
        self._num_tokens = layout.num_tokens
        self._rows = rows
        self._single = single

    def fill(self, x: object) -> None:
        """Put one step ``x`` (caller layout) in the buffer; bad input raises InputError."""
        try:
            arr = x if type(x) is np.ndarray else np.asarray(x)
        except (ValueError, TypeError):  # a ragged list
            return self._convert(x)
        if (
            arr.shape != self._shape
            or arr.dtype.kind not in self._kinds
            or (self._num_tokens is not None and not _ids_in_range(arr, self._num_tokens))
        ):
            return self._convert(x)
        if arr.dtype == self._dtype:
            self._view[...] = arr  # half np.copyto's cost
        else:
            with np.errstate(over="ignore"):  # an overflow to infinity is refused just below
                self._view[...] = arr  # the cast (of a kind convert() casts too)
        if self._check_finite and not _flat_finite(self._flat):
            self._convert(x)  # NaN, infinity, or beyond the dtype's range: worded there

    def _convert(self, x: object) -> None:
        np.copyto(self._buffer, self._layout.convert(x, self._rows, self._single, time=False))


class OutputLayout:
    """Puts a model output back in the caller's ``[batch, (time,) ...]`` layout."""

    def __init__(self, spec: TensorSpec, model_name: str) -> None:
        self.spec = spec
        self.model_name = model_name
        model = _labels(spec)
        caller = [label for label in ("b", "t") if label in model]
        caller += [label for label in model if label.startswith("f")]
        self._perm = _permutation(model, caller)
        self.has_time = spec.time_axis is not None
        self.has_batch = spec.batch_axis is not None

    def convert(self, y: np.ndarray, single: bool, step: bool) -> np.ndarray:
        """Model output → ``[rows, (T,) ...]``; one step drops T; ``single`` drops rows.

        An output of another rank than the signature's is an :class:`InputError` (a model that
        drops an axis at some sizes, such as a ``squeeze()`` at one time step)."""
        if y.ndim != len(self.spec.shape):
            raise InputError(
                f"{self.model_name}: output {self.spec.name!r}: the model gave shape "
                f"{list(y.shape)} for a signature of {list(self.spec.shape)} (does it squeeze "
                "its time or batch axis away at size 1?)"
            )
        if self._perm:
            y = y.transpose(self._perm)
        if not self.has_batch:
            y = y[None]
        if step and self.has_time:
            y = y[:, 0]
        return y[0, ...] if single else y  # a 0-d view, not a scalar, for a [batch] output
