"""The numpy dtype of an onnxruntime input or output (onnxruntime names them "tensor(float)"),
and its dimensions."""

from __future__ import annotations

import onnxruntime as ort

__all__ = ["arg_dims", "numpy_dtype"]

_ONNX_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}


def numpy_dtype(arg: ort.NodeArg) -> str:
    """The numpy dtype name of an onnxruntime input or output."""
    return _ONNX_TYPES.get(arg.type, arg.type)


def arg_dims(arg: ort.NodeArg) -> tuple[int | str, ...]:
    """The dimensions of an onnxruntime input or output: sizes, and names for dynamic axes
    (``"?"`` for an anonymous one)."""
    return tuple(d if isinstance(d, int) else (d or "?") for d in arg.shape)
