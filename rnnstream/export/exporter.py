"""``export()``: a PyTorch recurrent model to one self-describing, parity-checked ONNX file."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from rnnstream.errors import ExportError, ParityError
from rnnstream.export.cell_loop import find_cells, trace_cell_loop
from rnnstream.export.layers import RECURRENT_TYPES, RecurrentSpec
from rnnstream.export.parity import measure_parity, within
from rnnstream.export.quality import EVAL_TOKENS, task_quality
from rnnstream.export.quantize import quantize
from rnnstream.export.splice import splice_recurrent
from rnnstream.export.tolerance import Tolerance, tolerance_for
from rnnstream.export.trace import StateNames, find_recurrent, state_names, trace
from rnnstream.graphcost import graph_cost
from rnnstream.runtime import METADATA_KEY, Model, Signature, StateSpec, TensorSpec, load

__all__ = ["ExportReport", "InputSpec", "export", "quantize_file", "to_onnx", "verify"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InputSpec:
    """What the model's input ``x`` is: float frames or int64 token ids, and its layout."""

    dtype: torch.dtype
    feature_shape: tuple[int, ...]
    batch_first: bool
    token_range: int | None = None

    def sample(self, batch: int, steps: int, seed: int) -> torch.Tensor:
        """A random input of ``batch`` sequences of ``steps`` steps in the model's layout."""
        gen = torch.Generator().manual_seed(seed)
        lead = (batch, steps) if self.batch_first else (steps, batch)
        if self.token_range is not None:
            return torch.randint(0, self.token_range, lead + self.feature_shape, generator=gen)
        return torch.randn(lead + self.feature_shape, generator=gen)

    def tensor_spec(self) -> TensorSpec:
        lead = ("batch", "time") if self.batch_first else ("time", "batch")
        return TensorSpec(
            name="x",
            dtype="int64" if self.token_range is not None else "float32",
            shape=lead + self.feature_shape,
            batch_axis=0 if self.batch_first else 1,
            time_axis=1 if self.batch_first else 0,
        )


@dataclass(frozen=True)
class ExportReport:
    """What an export wrote and measured."""

    path: str
    signature: Signature
    seconds: float
    size_bytes: int

    @property
    def parity(self) -> dict:
        return self.signature.parity or {}

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "seconds": round(self.seconds, 3),
            "size_bytes": self.size_bytes,
            "signature": self.signature.to_dict(),
        }


def infer_input(
    model: nn.Module, example: torch.Tensor | None, batch_first: bool | None
) -> InputSpec:
    """Work out the input's dtype, feature shape and layout from ``example`` or the model.

    The layout is the first recurrent module's; a cell-loop model's is its ``batch_first``
    attribute or its config's (batch first when it has neither).
    """
    recurrent = find_recurrent(model)
    if batch_first is None and recurrent:
        batch_first = recurrent[0][1].batch_first
    if batch_first is None:
        config = getattr(model, "config", None)
        batch_first = getattr(model, "batch_first", getattr(config, "batch_first", True))
    embeddings = [m for m in model.modules() if isinstance(m, nn.Embedding)]
    if example is None and callable(getattr(model, "example_input", None)):
        example = model.example_input()
    if example is not None:
        if example.dim() < 2:
            raise ExportError(
                f"example must have batch and time axes, got shape {list(example.shape)}"
            )
        if example.is_floating_point():
            return InputSpec(torch.float32, tuple(example.shape[2:]), batch_first)
        vocab = embeddings[0].num_embeddings if embeddings else int(example.max()) + 1
        return InputSpec(torch.int64, tuple(example.shape[2:]), batch_first, vocab)
    for m in model.modules():
        if isinstance(m, nn.Embedding):
            return InputSpec(torch.int64, (), batch_first, m.num_embeddings)
        if isinstance(m, nn.Linear):
            return InputSpec(torch.float32, (m.in_features,), batch_first)
        if isinstance(m, (*RECURRENT_TYPES, nn.RNNCellBase)):
            return InputSpec(torch.float32, (m.input_size,), batch_first)
    raise ExportError("cannot tell the model's input; pass example=")


def _check_exportable(model: nn.Module) -> None:
    recurrent, cells = find_recurrent(model), find_cells(model)
    if not recurrent and not cells:
        raise ExportError(
            f"{type(model).__name__} has no nn.LSTM, nn.GRU or nn.RNN (nor a PeepholeLSTM, nor "
            "an nn.LSTMCell/GRUCell/RNNCell to loop over): nothing recurrent to stream"
        )
    if recurrent and cells:
        raise ExportError(
            f"{type(model).__name__} mixes recurrent layers ({recurrent[0][0]!r}) with cells "
            f"({cells[0][0]!r}); a model exports with one or the other"
        )
    for name, param in model.named_parameters():
        if param.dtype != torch.float32:
            raise ExportError(f"parameter {name!r} is {param.dtype}; export needs float32 weights")


def to_onnx(
    model: nn.Module,
    inputs: InputSpec,
    *,
    kind: str = "generic",
    output_name: str = "y",
    vocab: str | None = None,
    bos: int | None = None,
    eos: int | None = None,
    labels: tuple[str, ...] | None = None,
) -> onnx.ModelProto:
    """Build the ONNX model (graph, weights, signature without parity) and check it."""
    _check_exportable(model)
    example = inputs.sample(2, 3, seed=0)
    if find_recurrent(model):
        traced, states, source = _trace_recurrent(model, example, inputs.batch_first, output_name)
    else:
        loop = trace_cell_loop(model, example, inputs.batch_first, output_name)
        traced, states, source = loop.model, loop.states, {"cells": loop.cells}
    traced.producer_name = "rnnstream"
    bidirectional = any(s["bidirectional"] for s in source.get("recurrent", {}).values())
    signature = Signature(
        input=inputs.tensor_spec(),
        outputs=(_output_spec(traced, output_name),),
        states=states,
        kind=kind,
        streamable=not bidirectional,
        vocab=vocab,
        num_tokens=inputs.token_range,
        bos=bos,
        eos=eos,
        labels=labels,
        source={"module": type(model).__name__, **source, "torch": torch.__version__},
    )
    signature = replace(signature, cost=graph_cost(traced))
    _set_signature(traced, signature)
    try:
        onnx.checker.check_model(traced, full_check=True)
        return onnx.shape_inference.infer_shapes(traced, check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise ExportError(f"the exported graph fails onnx's checker: {e}") from e


def _trace_recurrent(
    model: nn.Module, example: torch.Tensor, batch_first: bool, output_name: str
) -> tuple[onnx.ModelProto, tuple[StateSpec, ...], dict]:
    """Trace with placeholders and splice in the recurrent layers: graph, states, source info."""
    recurrent = find_recurrent(model)
    single = len(recurrent) == 1
    specs = [(key, RecurrentSpec.of(m)) for key, m in recurrent]
    names: list[tuple[RecurrentSpec, StateNames]] = [
        (spec, state_names(key, spec, single)) for key, spec in specs
    ]
    traced = trace(model, example, names, batch_first, output_name)
    splice_recurrent(
        traced, {"" if isinstance(model, RECURRENT_TYPES) else k: m for k, m in recurrent}
    )
    states = []
    for spec, sn in names:
        sizes = (spec.out_size, spec.hidden_size)
        for i, (name_in, name_out) in enumerate(zip(sn.inputs, sn.outputs)):
            shape = (spec.num_layers * spec.dirs, "batch", sizes[i])
            states.append(StateSpec(name_in, name_out, "float32", shape, batch_axis=1))
    source = {"recurrent": {key or "<model>": spec.__dict__ for key, spec in specs}}
    return traced, tuple(states), source


def _output_spec(model: onnx.ModelProto, name: str) -> TensorSpec:
    value = next(o for o in model.graph.output if o.name == name)
    tensor_type = value.type.tensor_type
    dims = tuple(d.dim_param or d.dim_value for d in tensor_type.shape.dim)
    if "batch" not in dims:
        raise ExportError(f"output {name!r} has no batch axis (shape {list(dims)})")
    return TensorSpec(
        name=name,
        dtype=onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name,
        shape=dims,
        batch_axis=dims.index("batch"),
        time_axis=dims.index("time") if "time" in dims else None,
    )


def _set_signature(model: onnx.ModelProto, signature: Signature) -> None:
    props = {p.key: p.value for p in model.metadata_props}
    props[METADATA_KEY] = signature.to_json()
    onnx.helper.set_model_props(model, props)


def export(
    model: nn.Module,
    path: str | Path,
    *,
    example: torch.Tensor | None = None,
    batch_first: bool | None = None,
    kind: str = "generic",
    output_name: str = "y",
    vocab: str | None = None,
    bos: int | None = None,
    eos: int | None = None,
    labels: tuple[str, ...] | None = None,
    parity_steps: int = 1000,
    parity_batch: int = 2,
    parity_chunk: int = 16,
    atol: float | None = None,
    seed: int = 0,
    precision: str = "float32",
    eval_data: str = "stdlib",
    eval_tokens: int = EVAL_TOKENS,
) -> ExportReport:
    """Export ``model`` to ``path`` as a streamable ONNX model and prove parity with PyTorch.

    The model's recurrent state becomes graph inputs/outputs (``h0``/``c0`` → ``hn``/``cn``), batch
    and time are dynamic, and the signature (with the parity record) is stored in the file. Parity
    steps the ONNX model ``parity_steps`` times over ``parity_batch`` random sequences, and in
    chunks of ``parity_chunk``, against one PyTorch forward. ``kind``, ``vocab``, ``bos``/``eos``
    and ``labels`` (class names of a classifier or tagger) go into the signature. ``precision``
    ``"int8"`` or ``"float16"`` writes a quantised model (see :func:`rnnstream.export.quantize`),
    whose parity record also scores the task metric (bits per character for a char LM, on the first
    ``eval_tokens`` tokens of ``eval_data``'s validation text) next to PyTorch's. Raises
    :class:`ParityError` (nothing is written) when the errors exceed the precision's tolerance
    (:data:`~rnnstream.export.tolerance.TOLERANCES`; ``atol`` overrides its absolute part).
    """
    tolerance = tolerance_for(precision)
    if atol is not None:
        tolerance = replace(tolerance, atol=atol)
    start = time.perf_counter()
    was_training = model.training
    model.eval()
    try:
        _check_exportable(model)
        inputs = infer_input(model, example, batch_first)
        log.info("tracing %s and building the ONNX graph", type(model).__name__)
        proto = to_onnx(
            model,
            inputs,
            kind=kind,
            output_name=output_name,
            vocab=vocab,
            bos=bos,
            eos=eos,
            labels=labels,
        )
        if precision != "float32":
            log.info("converting to %s", precision)
            proto = quantize(proto, precision)
        runtime_model = load(proto.SerializeToString())
        x = inputs.sample(parity_batch, parity_steps, seed)
        parity = _measure(model, runtime_model, x, parity_chunk, tolerance, eval_data, eval_tokens)
    finally:
        model.train(was_training)
    if not parity["passed"]:
        raise ParityError(parity_failure_message(parity), parity)
    signature = runtime_model.signature.with_parity(parity)
    _set_signature(proto, signature)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = proto.SerializeToString()
    path.write_bytes(data)
    return ExportReport(str(path), signature, time.perf_counter() - start, len(data))


def verify(
    onnx_path: str | Path,
    model: nn.Module,
    *,
    steps: int = 1000,
    batch: int = 2,
    chunk: int = 16,
    atol: float | None = None,
    seed: int = 1,
) -> dict:
    """Re-measure the parity of an exported file against ``model``; returns the report.

    The tolerance is the one recorded at export for the file's precision, else that precision's
    entry in :data:`~rnnstream.export.tolerance.TOLERANCES`; ``atol`` overrides its absolute
    part. A lower-precision file's task metric is re-measured on the recorded validation data.
    Raises :class:`ParityError` when the model and the file disagree beyond the tolerance.
    """
    runtime_model = load(onnx_path)
    sig = runtime_model.signature
    tolerance = tolerance_for(sig.precision, sig.parity)
    if atol is not None:
        tolerance = replace(tolerance, atol=atol)
    inputs = _inputs_of(sig, model, str(onnx_path))
    task = (sig.parity or {}).get("task") or {}
    was_training = model.training
    model.eval()
    try:
        parity = _measure(
            model,
            runtime_model,
            inputs.sample(batch, steps, seed),
            chunk,
            tolerance,
            task.get("data", "stdlib"),
            task.get("tokens", EVAL_TOKENS),
        )
    finally:
        model.train(was_training)
    if not parity["passed"]:
        raise ParityError(parity_failure_message(parity), parity)
    return parity


def quantize_file(
    source: str | Path,
    path: str | Path,
    precision: str,
    *,
    against: nn.Module | None = None,
    steps: int = 1000,
    batch: int = 2,
    chunk: int = 16,
    atol: float | None = None,
    seed: int = 0,
    eval_data: str = "stdlib",
    eval_tokens: int = EVAL_TOKENS,
) -> ExportReport:
    """Write ``source`` (a float32 rnnstream export) at ``precision`` to ``path``, with parity.

    Parity and the task metric are measured against ``against`` (the PyTorch model) when given,
    else against the float32 source file itself, whose own parity with PyTorch is kept in the
    record (``reference_parity``). Raises :class:`ParityError` (nothing is written) beyond the
    precision's tolerance.
    """
    start = time.perf_counter()
    tolerance = tolerance_for(precision)
    if atol is not None:
        tolerance = replace(tolerance, atol=atol)
    source_model = load(source)
    proto = quantize(source, precision)
    runtime_model = load(proto.SerializeToString())
    sig = runtime_model.signature
    reference: nn.Module | Model = source_model if against is None else against
    x = _inputs_of(sig, against, str(source)).sample(batch, steps, seed)
    was_training = against is not None and against.training
    if against is not None:
        against.eval()
    try:
        parity = _measure(reference, runtime_model, x, chunk, tolerance, eval_data, eval_tokens)
    finally:
        if was_training:
            against.train()
    source_parity = source_model.signature.parity
    if against is None and source_parity:
        parity["reference_parity"] = {
            k: source_parity[k] for k in ("max_abs_err", "max_rel_err", "atol", "steps", "passed")
        }
    if not parity["passed"]:
        raise ParityError(parity_failure_message(parity), parity)
    signature = sig.with_parity(parity)
    _set_signature(proto, signature)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = proto.SerializeToString()
    path.write_bytes(data)
    return ExportReport(str(path), signature, time.perf_counter() - start, len(data))


def _inputs_of(sig: Signature, model: nn.Module | None, name: str) -> InputSpec:
    """The input of a file's model, from its signature (and the PyTorch model's embedding)."""
    spec = sig.input
    feature_shape = tuple(spec.shape[2:])  # batch and time are the first two axes
    token_range = None
    if np.dtype(spec.dtype).kind in "iu":
        embeddings = [m for m in model.modules() if isinstance(m, nn.Embedding)] if model else []
        token_range = (
            embeddings[0].num_embeddings if embeddings else sig.num_tokens or len(sig.vocab or "")
        )
        if not token_range:
            raise ExportError(f"{name} takes token ids but nothing gives a vocabulary size")
    dtype = torch.float32 if token_range is None else torch.int64
    return InputSpec(dtype, feature_shape, spec.batch_axis == 0, token_range)


def _measure(
    reference: nn.Module | Model,
    runtime_model: Model,
    x: torch.Tensor,
    chunk: int,
    tolerance: Tolerance,
    eval_data: str,
    eval_tokens: int,
) -> dict:
    """The parity record: errors against ``reference`` and, below float32, the task metric."""
    precision = runtime_model.signature.precision
    log.info("parity (%s): a %s stream, step by step and in chunks", precision, list(x.shape))
    parity = measure_parity(reference, runtime_model, x, chunk, tolerance.atol, tolerance.rtol)
    parity["precision"] = precision
    if precision != "float32":
        log.info("task metric on %s validation text (%d tokens)", eval_data, eval_tokens)
        task = task_quality(
            reference, runtime_model, eval_data, eval_tokens, tolerance.max_bpc_increase
        )
        if task is not None:
            parity["task"] = task
            parity["passed"] = parity["passed"] and task["passed"]
    return parity


def parity_failure_message(parity: dict) -> str:
    """A one-paragraph account of which tensors missed the tolerance and by how much."""
    worst = []
    rtol = parity.get("rtol", 0.0)
    for mode in ("step", "chunk", "sequence"):
        for tensor, err in parity.get(mode, {}).items():
            if not within(err, parity["atol"], rtol):
                worst.append(
                    f"{tensor} ({mode}): max abs err {err['max_abs_err']:.3g}, "
                    f"max rel err {err['max_rel_err']:.3g}"
                )
    task = parity.get("task")
    if task and not task["passed"]:
        worst.append(
            f"{task['metric']} {task['value']:.4f} vs {task['reference']:.4f} "
            f"(+{task['increase']:.4f} > {task['max_increase']:g})"
        )
    limits = f"atol={parity['atol']:g}" + (f", rtol={rtol:g}" if rtol else "")
    reference = "PyTorch" if parity.get("reference", "pytorch") == "pytorch" else "its reference"
    return (
        f"parity failed: the {parity.get('precision', 'float32')} ONNX model differs from "
        f"{reference} beyond {limits} over {parity['steps']} steps x batch {parity['batch']}: "
        + "; ".join(worst)
    )
