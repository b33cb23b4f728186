"""Lower-precision versions of an exported model: dynamic int8, weight-only int4, float16.

``quantize`` converts the graph and carries the signature over with ``precision`` set; the parity
of the result is measured by :func:`rnnstream.export.quantize_file` or ``export(precision=...)``.

* ``int8``: onnxruntime's dynamic quantisation. Weights are stored as int8 (per output channel),
  activations are quantised to uint8 on the fly at each run. LSTM operators become
  ``DynamicQuantizeLSTM``. A streamable model with GRU or RNN operators, which onnxruntime does
  not quantise, gets an int8 step path (:mod:`rnnstream.export.step_path`: one ``If`` on T == 1
  whose step runs the layers as ``DynamicQuantizeMatMul`` cells, chunks the float operators over
  the same int8 weights); operators it does not cover (bidirectional, reverse) are rewritten
  as a Scan over MatMuls (:mod:`rnnstream.export.scan_cells`) whose weights quantise like the
  linear layers'. Embedding tables are stored int8 per row.
* ``int4``: weight-only 4-bit ``MatMulNBits`` for every linear weight, the recurrent layers
  rewritten as explicit cells first (:mod:`rnnstream.export.int4`).
* ``float16``: every float initializer is stored as float16 and cast back to float32 where the
  graph reads it. onnxruntime folds the casts when it loads the model, so the file is half the
  size while every operator computes in float32: onnxruntime's CPU provider has no float16 kernels
  for MatMul, Gemm, LSTM, GRU, RNN or the elementwise operators on x86-64 and would insert casts
  around each of them at every step instead. Inputs, outputs and states stay float32.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
from google.protobuf.message import DecodeError
from onnx import TensorProto, helper, numpy_helper

from rnnstream.errors import ExportError
from rnnstream.export.graph_walk import all_nodes
from rnnstream.export.int4 import DEFAULT_BLOCK_SIZE, check_block_size, to_int4
from rnnstream.export.scan_cells import rewrite_as_scan
from rnnstream.export.step_path import (
    add_step_path,
    step_path_nodes,
    step_shapes,
    without_step_path,
)
from rnnstream.runtime import METADATA_KEY, Signature

__all__ = ["PRECISIONS", "quantize"]

PRECISIONS = ("float32", "float16", "int8", "int4")
_FP16_MAX = float(np.finfo(np.float16).max)


def quantize(
    source: str | Path | bytes | onnx.ModelProto, precision: str, *, block_size: int | None = None
) -> onnx.ModelProto:
    """``source`` (a float32 model exported by rnnstream) converted to ``precision``.

    ``precision`` is ``"int8"``, ``"int4"`` or ``"float16"``; ``block_size`` (int4 only, default
    32) is the number of weights sharing one scale. The signature and other metadata carry over
    with the precision set and no parity record (parity is measured on the result, not inherited).
    """
    check_block_size(precision, block_size)
    if precision not in PRECISIONS[1:]:
        raise ExportError(f"precision must be one of {PRECISIONS[1:]}, got {precision!r}")
    data = _read(source)
    try:
        model = onnx.load_from_string(data)
    except DecodeError as e:
        raise ExportError(f"{_name(source)} is not an ONNX model: {e}") from e
    props = {p.key: p.value for p in model.metadata_props}
    if METADATA_KEY not in props:
        raise ExportError("the model has no rnnstream signature: export it with rnnstream first")
    signature = Signature.from_json(props[METADATA_KEY])
    if signature.precision != "float32":
        raise ExportError(f"the model is already {signature.precision}; start from float32")
    without_step_path(model)
    if precision == "int8":
        converted, details = _int8(model, signature)
    elif precision == "int4":
        converted, details = to_int4(
            model, DEFAULT_BLOCK_SIZE if block_size is None else block_size
        )
    else:
        converted, details = _float16(model)
    details["onnxruntime"] = onnxruntime.__version__
    details["float32_sha256"] = hashlib.sha256(data).hexdigest()
    signature = replace(
        signature,
        precision=precision,
        parity=None,
        source={**signature.source, "quantization": details},
    )
    converted.producer_name = model.producer_name
    props[METADATA_KEY] = signature.to_json()
    del converted.metadata_props[:]
    onnx.helper.set_model_props(converted, props)
    try:
        onnx.checker.check_model(converted)
    except onnx.checker.ValidationError as e:
        raise ExportError(f"the {precision} graph fails onnx's checker: {e}") from e
    return converted


def _name(source: str | Path | bytes | onnx.ModelProto) -> str:
    return str(source) if isinstance(source, (str, Path)) else "the model"


def _read(source: str | Path | bytes | onnx.ModelProto) -> bytes:
    """The serialised model (a file's bytes as they are, so that their hash is the file's)."""
    if isinstance(source, onnx.ModelProto):
        return source.SerializeToString()
    if isinstance(source, bytes):
        return source
    try:
        return Path(source).read_bytes()
    except OSError as e:
        raise ExportError(f"cannot read the ONNX model {source}: {e.strerror}") from e


@contextmanager
def _root_logger_muted() -> Iterator[None]:
    """onnxruntime.quantization advises on pre-processing through the root logger (and would
    configure it): give the root logger a handler that drops the advice while it runs."""
    root = logging.getLogger()
    handler = logging.NullHandler()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def _int8(model: onnx.ModelProto, signature: Signature) -> tuple[onnx.ModelProto, dict]:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    stepped = step_path_nodes(model, signature)
    shapes = step_shapes(model)
    float_nodes = rewrite_as_scan(model, skip=stepped)
    with tempfile.TemporaryDirectory(prefix="rnnstream-int8-") as tmp, _root_logger_muted():
        out = Path(tmp) / "int8.onnx"
        quantize_dynamic(
            model,
            out,
            op_types_to_quantize=["MatMul", "LSTM"],
            per_channel=True,
            reduce_range=True,
            weight_type=QuantType.QInt8,
            extra_options={"EnableSubgraph": True},
        )
        converted = onnx.load(str(out))
    _declare_domains(converted)
    tables = _int8_tables(converted)
    add_step_path(converted, signature, shapes=shapes)
    details = {
        "method": "onnxruntime.quantization.quantize_dynamic",
        "weights": "int8, symmetric, per output channel",
        "activations": "uint8, quantised at each run",
        "float_recurrent_nodes": float_nodes,
        "step_paths": stepped,
        "tables": "int8, symmetric, per row, dequantised when loaded" if tables else None,
    }
    return converted, details


def _declare_domains(model: onnx.ModelProto) -> None:
    """Import every operator domain a node uses, in the graph or in any subgraph:
    ``quantize_dynamic`` declares ``com.microsoft`` only for the top-level nodes it converts, not
    for a ``DynamicQuantizeLSTM`` it puts in a cell loop's ``Scan`` body."""
    declared = {o.domain for o in model.opset_import}
    used = {node.domain for node in all_nodes(model.graph)} - declared - {"ai.onnx"}
    for domain in sorted(used):
        model.opset_import.append(helper.make_opsetid(domain, 1))


def _int8_tables(model: onnx.ModelProto) -> list[str]:
    """Store the float tables read by top-level ``Gather`` nodes (embeddings) as int8 per row,
    dequantised by a ``Cast`` and ``Mul`` of initializers that onnxruntime folds when it loads the
    model: the file is int8-sized and each step gathers float rows.

    (``quantize_dynamic``'s own ``Gather`` quantisation dequantises the gathered rows at every run
    with a ``DequantizeLinear``, which onnxruntime 1.32's QDQ propagation crashes on when its
    output reaches an ``If`` branch, as the step paths' do.) Returns the tables' names.
    """
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    tables = {
        n.input[0]
        for n in graph.node
        if n.op_type == "Gather"
        and n.input[0] in initializers
        and initializers[n.input[0]].data_type == TensorProto.FLOAT
        and len(initializers[n.input[0]].dims) == 2
    }
    casts = []
    for name in sorted(tables):
        init = initializers[name]
        table = numpy_helper.to_array(init)
        scale = np.maximum(np.abs(table).max(axis=1, keepdims=True), 1e-12) / 127
        q = np.clip(np.round(table / scale), -127, 127).astype(np.int8)
        init.CopyFrom(numpy_helper.from_array(q, f"{name}/int8"))
        graph.initializer.append(numpy_helper.from_array(scale.astype(np.float32), f"{name}/scale"))
        casts.append(helper.make_node("Cast", [init.name], [f"{name}/float"], to=TensorProto.FLOAT))
        casts.append(helper.make_node("Mul", [f"{name}/float", f"{name}/scale"], [name]))
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    return sorted(tables)


def _float16(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict]:
    graph = model.graph
    casts = []
    for init in graph.initializer:
        if init.data_type != TensorProto.FLOAT:
            continue
        value = numpy_helper.to_array(init)
        if value.size and float(np.abs(value).max()) > _FP16_MAX:
            raise ExportError(
                f"initializer {init.name!r} has values beyond float16's range (±{_FP16_MAX:g})"
            )
        name = init.name
        init.CopyFrom(numpy_helper.from_array(value.astype(np.float16), f"{name}/float16"))
        casts.append(helper.make_node("Cast", [init.name], [name], to=TensorProto.FLOAT))
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    details = {
        "method": "float16 initializers, cast to float32 when loaded",
        "weights": "float16",
        "compute": "float32",
    }
    return model, details
