"""``export()``: a PyTorch recurrent model to one self-describing, parity-checked ONNX file."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from rnnstream.errors import ExportError, ParityError
from rnnstream.export.forward_args import StateArguments, state_arguments
from rnnstream.export.graphcost import graph_cost
from rnnstream.export.heads import Heads, find_heads
from rnnstream.export.initial_state import refuse_carried_state
from rnnstream.export.int4 import check_block_size
from rnnstream.export.layers import RECURRENT_TYPES, RecurrentSpec
from rnnstream.export.layout import InputSpec, batch_first_seen_by_layer, guess_input
from rnnstream.export.parity import measure_parity, whole_sequence_errors
from rnnstream.export.pinned import check_free_axes
from rnnstream.export.quality import task_quality
from rnnstream.export.quantize import quantize
from rnnstream.export.same_model import refuse_other_model
from rnnstream.export.settings import ParitySettings
from rnnstream.export.splice import splice_recurrent
from rnnstream.export.step_path import add_step_path, without_step_path
from rnnstream.export.streaming_conv import TimeConv, find_time_convs
from rnnstream.export.time_mixing import time_mixing_note
from rnnstream.export.tolerance import Tolerance, tolerance_for
from rnnstream.export.trace import StateNames, find_recurrent, state_names, trace
from rnnstream.export.trace_cell_loop import find_cells, layers_run_per_step, trace_cell_loop
from rnnstream.models.description import ModelDescription, describe_model
from rnnstream.runtime import METADATA_KEY, Model, Signature, StateSpec, TensorSpec, load
from rnnstream.runtime.parity_record import ParityRecord, ReferenceParity

__all__ = ["ExportReport", "InputSpec", "export", "quantize_file", "to_onnx", "verify"]

DEFAULT_PARITY = ParitySettings()
VERIFY_PARITY = ParitySettings(seed=1)  # verify's default: another stream than export's
GENERIC = ModelDescription()

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportReport:
    """What an export wrote and measured."""

    path: str
    signature: Signature
    seconds: float
    size_bytes: int

    @property
    def parity(self) -> ParityRecord | None:
        return self.signature.parity

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

    The layout is the first recurrent module's, unless the forward transposes the input before
    it (:mod:`rnnstream.export.layout`); a cell-loop model's is its ``batch_first`` attribute or
    its config's (batch first when it has neither).
    """
    spec = guess_input(model, example, batch_first)
    if batch_first is not None or not find_recurrent(model):
        return spec
    seen = batch_first_seen_by_layer(
        model, spec.sample(2, 3, seed=0), spec.batch_first, _call_from_zero_state
    )
    return replace(spec, batch_first=seen)


def _call_from_zero_state(model: nn.Module, x: torch.Tensor) -> object:
    return state_arguments(model, x).call(model, x)


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
    for name, module in model.named_modules():
        if isinstance(module, torch.jit.ScriptModule):
            raise ExportError(
                f"submodule {name or '(the model)'!r} is compiled with torch.jit.script/trace, "
                "which torch.export cannot trace; export the model built from plain nn.Modules "
                "(script it after export if you need to)"
            )
    for name, param in model.named_parameters():
        if param.dtype != torch.float32:
            raise ExportError(
                f"parameter {name!r} is {param.dtype}; export needs float32 weights: call "
                "model.float() first (and drop any .double()/.half() casts in forward)"
            )


def to_onnx(
    model: nn.Module,
    inputs: InputSpec,
    *,
    description: ModelDescription = GENERIC,
    output_names: Sequence[str] | None = None,
) -> onnx.ModelProto:
    """Build the ONNX model (graph, weights, signature without parity) and check it."""
    _check_exportable(model)
    example = inputs.sample(2, 3, seed=0)
    arguments = state_arguments(model, example)
    refuse_carried_state(model, example, arguments)
    heads = find_heads(model, example, arguments, output_names, inputs.batch_first)
    time_axis = 1 if inputs.batch_first else 0
    if find_recurrent(model) and not layers_run_per_step(model, example, time_axis, arguments):
        convs = _streaming_convs(model, inputs)
        traced, states, source = _trace_recurrent(
            model, example, inputs.batch_first, arguments, heads, convs
        )
    else:
        if any(heads.orders):
            raise ExportError(
                f"{type(model).__name__} loops over cells and flattens time and batch in its "
                "output; a cell loop exports per-step outputs: return [batch, time, ...]"
            )
        if len(heads.places) > 1:
            raise ExportError(
                f"{type(model).__name__} loops over cells and returns {len(heads.places)} output "
                f"tensors besides its state ({', '.join(heads.places)}); a cell loop exports one "
                "output: return one tensor (e.g. the heads concatenated)"
            )
        convs = _streaming_convs(model, inputs)
        loop = trace_cell_loop(model, example, inputs.batch_first, heads.names[0], arguments, convs)
        traced, states, source = loop.model, loop.states, {"cells": loop.cells}
        if convs:
            source["conv_context"] = {conv.key: conv.context for conv in convs}
    traced.producer_name = "rnnstream"
    bidirectional = any(s["bidirectional"] for s in source.get("recurrent", {}).values())
    signature = Signature(
        input=inputs.tensor_spec(),
        outputs=tuple(_output_spec(traced, name) for name in heads.names),
        states=states,
        kind=description.kind,
        streamable=not bidirectional,
        vocab=description.vocab,
        num_tokens=inputs.token_range,
        bos=description.bos,
        eos=description.eos,
        labels=description.labels,
        source={"module": type(model).__name__, **source, "torch": torch.__version__},
    )
    signature = replace(signature, cost=graph_cost(traced))
    _set_signature(traced, signature)
    try:
        onnx.checker.check_model(traced, full_check=True)
        return onnx.shape_inference.infer_shapes(traced, check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise ExportError(f"the exported graph fails onnx's checker: {e}") from e


def _streaming_convs(model: nn.Module, inputs: InputSpec) -> tuple[TimeConv, ...]:
    """The causal convolutions over time that stream with a context state (none when a
    bidirectional layer makes the model whole-sequence only)."""
    if any(m.bidirectional for _, m in find_recurrent(model) if hasattr(m, "bidirectional")):
        return ()
    probe = inputs.sample(2, 8, seed=0)
    return tuple(find_time_convs(model, probe, time_axis=1 if inputs.batch_first else 0))


def _trace_recurrent(
    model: nn.Module,
    example: torch.Tensor,
    batch_first: bool,
    arguments: StateArguments,
    heads: Heads,
    convs: tuple[TimeConv, ...] = (),
) -> tuple[onnx.ModelProto, tuple[StateSpec, ...], dict]:
    """Trace with placeholders and splice in the recurrent layers: graph, states, source info.

    The causal convolutions ``convs`` stream, their contexts the last states.
    """
    recurrent = find_recurrent(model)
    single = len(recurrent) == 1
    specs = [(key, RecurrentSpec.of(m)) for key, m in recurrent]
    names: list[tuple[RecurrentSpec, StateNames]] = [
        (spec, state_names(key, spec, single)) for key, spec in specs
    ]
    traced = trace(model, example, names, batch_first, arguments, heads, convs)
    splice_recurrent(
        traced, {"" if isinstance(model, RECURRENT_TYPES) else k: m for k, m in recurrent}
    )
    states = []
    for spec, sn in names:
        sizes = (spec.out_size, spec.hidden_size)
        for i, (name_in, name_out) in enumerate(zip(sn.inputs, sn.outputs)):
            shape = (spec.num_layers * spec.dirs, "batch", sizes[i])
            states.append(StateSpec(name_in, name_out, "float32", shape, batch_axis=1))
    states.extend(conv.state_spec() for conv in convs)
    source = {"recurrent": {key or "<model>": spec.__dict__ for key, spec in specs}}
    if convs:
        source["conv_context"] = {conv.key: conv.context for conv in convs}
    return traced, tuple(states), source


def _output_spec(model: onnx.ModelProto, name: str) -> TensorSpec:
    value = next(o for o in model.graph.output if o.name == name)
    tensor_type = value.type.tensor_type
    dims = tuple(d.dim_param or d.dim_value for d in tensor_type.shape.dim)
    if "batch" not in dims:
        if any(isinstance(d, str) and "batch" in d and "time" in d for d in dims):
            raise ExportError(
                f"output {name!r} has shape {list(dims)}: the forward flattens time and batch into "
                "one axis (view(-1, V)), which a stream cannot split; return the per-step shape "
                "(flatten for the loss in the training loop instead)"
            )
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
    output_names: Sequence[str] | None = None,
    description: ModelDescription | None = None,
    parity: ParitySettings = DEFAULT_PARITY,
    precision: str = "float32",
    block_size: int | None = None,
) -> ExportReport:
    """Export ``model`` to ``path`` as a streamable ONNX model and prove parity with PyTorch.

    The model's recurrent state becomes graph inputs/outputs (``h0``/``c0`` → ``hn``/``cn``), batch
    and time are dynamic; state the forward takes as arguments (``forward(x, hidden)``) is
    supplied from those inputs (:mod:`rnnstream.export.forward_args`), and every tensor it returns
    besides its state is an output, named by ``output_names`` (else dict keys, ``y`` or ``y0``,
    ``y1``, ...); and the signature (with the parity record) is stored in the file. Its
    kind, vocabulary, BOS/EOS and labels come from ``description``, else from the model itself
    (:func:`~rnnstream.models.describe_model`). Parity runs as ``parity`` says (see
    :class:`ParitySettings`). ``precision`` ``"int8"``, ``"int4"`` (``block_size`` weights per
    scale, default 32) or ``"float16"`` writes a quantised model
    (see :func:`rnnstream.export.quantize`), whose parity record also scores the task metric (bits
    per character for a char LM) next to PyTorch's. A float32 model with forward ``RNN`` layers
    gets a step path (float cells at ``T == 1``: :mod:`rnnstream.export.step_path`). Raises
    :class:`ParityError` (nothing is written) when the errors exceed the precision's tolerance
    (:data:`~rnnstream.export.tolerance.TOLERANCES`; ``parity.atol`` overrides its absolute part).
    """
    tolerance = _tolerance(tolerance_for(precision), parity)
    check_block_size(precision, block_size)
    description = description if description is not None else describe_model(model)
    start = time.perf_counter()
    was_training = model.training
    model.eval()
    try:
        _check_exportable(model)
        inputs = infer_input(model, example, batch_first)
        if example is not None:
            check_free_axes(model, example, inputs.batch_first)
        log.info("tracing %s and building the ONNX graph", type(model).__name__)
        proto = to_onnx(model, inputs, description=description, output_names=output_names)
        if precision != "float32":
            log.info("converting to %s", precision)
            proto = quantize(proto, precision, block_size=block_size)
        else:
            add_step_path(proto, int8=False)
        runtime_model = load(proto.SerializeToString())
        x = inputs.sample(parity.batch, parity.steps, parity.seed)
        record = _measure(model, runtime_model, x, tolerance, parity)
        _refuse_time_mixing(model, runtime_model, proto, x, record)
    finally:
        model.train(was_training)
    return _write(proto, runtime_model.signature, record, path, start)


def verify(
    onnx_path: str | Path, model: nn.Module, parity: ParitySettings = VERIFY_PARITY
) -> ParityRecord:
    """Re-measure the parity of an exported file against ``model``; returns the record.

    The tolerance is the one recorded at export for the file's precision, else that precision's
    entry in :data:`~rnnstream.export.tolerance.TOLERANCES`; ``parity.atol`` overrides its
    absolute part. A lower-precision file's task metric is re-measured on the recorded validation
    data. Raises :class:`ParityError` when the model and the file disagree beyond the tolerance.
    """
    runtime_model = load(onnx_path)
    sig = runtime_model.signature
    tolerance = _tolerance(tolerance_for(sig.precision, sig.parity), parity)
    task = sig.parity.task if sig.parity else None
    if task is not None:
        parity = replace(parity, eval_data=task.data, eval_tokens=task.tokens)
    inputs = _inputs_of(sig, model, str(onnx_path))
    was_training = model.training
    model.eval()
    try:
        refuse_other_model(model, runtime_model, str(onnx_path))
        x = inputs.sample(parity.batch, parity.steps, parity.seed)
        record = _measure(model, runtime_model, x, tolerance, parity)
        if not record.passed:
            _refuse_time_mixing(model, runtime_model, onnx.load(str(onnx_path)), x, record)
    finally:
        model.train(was_training)
    if not record.passed:
        raise ParityError(parity_failure_message(record), record)
    return record


def quantize_file(
    source: str | Path,
    path: str | Path,
    precision: str,
    *,
    against: nn.Module | None = None,
    parity: ParitySettings = DEFAULT_PARITY,
    block_size: int | None = None,
) -> ExportReport:
    """Write ``source`` (a float32 rnnstream export) at ``precision`` to ``path``, with parity.

    Parity and the task metric are measured against ``against`` (the PyTorch model) when given,
    else against the float32 source file itself, whose own parity with PyTorch is kept in the
    record (``reference_parity``). Raises :class:`ParityError` (nothing is written) beyond the
    precision's tolerance. ``block_size``: int4's weights per scale (default 32).
    """
    start = time.perf_counter()
    tolerance = _tolerance(tolerance_for(precision), parity)
    check_block_size(precision, block_size)
    source_model = load(source)
    proto = quantize(source, precision, block_size=block_size)
    runtime_model = load(proto.SerializeToString())
    sig = runtime_model.signature
    reference: nn.Module | Model = source_model if against is None else against
    x = _inputs_of(sig, against, str(source)).sample(parity.batch, parity.steps, parity.seed)
    was_training = against is not None and against.training
    if against is not None:
        against.eval()
    try:
        if against is not None:
            refuse_other_model(against, source_model, str(source))
        record = _measure(reference, runtime_model, x, tolerance, parity)
    finally:
        if was_training:
            against.train()
    source_parity = source_model.signature.parity
    if against is None and source_parity:
        record = replace(record, reference_parity=ReferenceParity.of(source_parity))
    return _write(proto, sig, record, path, start)


def _refuse_time_mixing(
    model: nn.Module,
    runtime_model: Model,
    proto: onnx.ModelProto,
    x: torch.Tensor,
    record: ParityRecord,
) -> None:
    """Raise the :class:`ParityError` that says so when a failed streamed ``record`` comes from
    time steps mixed outside the recurrent layers (:mod:`rnnstream.export.time_mixing`)."""
    if record.passed or not runtime_model.signature.streamable:
        return
    proto = without_step_path(onnx.ModelProto.FromString(proto.SerializeToString()))
    whole = whole_sequence_errors(model, runtime_model, x)
    note = time_mixing_note(record, whole, proto, runtime_model.signature)
    if note is not None:
        raise ParityError(parity_failure_message(record) + "\n" + note, record)


def _tolerance(table: Tolerance, parity: ParitySettings) -> Tolerance:
    return table if parity.atol is None else replace(table, atol=parity.atol)


def _write(
    proto: onnx.ModelProto, sig: Signature, record: ParityRecord, path: str | Path, start: float
) -> ExportReport:
    """Refuse a failed record, else write the model with its record in the signature."""
    if not record.passed:
        raise ParityError(parity_failure_message(record), record)
    signature = sig.with_parity(record)
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
    tolerance: Tolerance,
    parity: ParitySettings,
) -> ParityRecord:
    """The parity record: errors against ``reference`` and, below float32, the task metric."""
    precision = runtime_model.signature.precision
    log.info("parity (%s): a %s stream, step by step and in chunks", precision, list(x.shape))
    record = measure_parity(
        reference, runtime_model, x, parity.chunk, tolerance.atol, tolerance.rtol
    )
    if precision != "float32":
        log.info("task metric on %s validation (%d tokens)", parity.eval_data, parity.eval_tokens)
        task = task_quality(
            reference,
            runtime_model,
            parity.eval_data,
            parity.eval_tokens,
            tolerance.max_bpc_increase,
        )
        if task is not None:
            record = replace(record, task=task, passed=record.passed and task.passed)
    return record


def parity_failure_message(record: ParityRecord) -> str:
    """A one-paragraph account of which tensors missed the tolerance and by how much."""
    limits = f"atol={record.atol:g}" + (f", rtol={record.rtol:g}" if record.rtol else "")
    reference = "PyTorch" if record.reference == "pytorch" else "its reference"
    return (
        f"parity failed: the {record.precision} ONNX model differs from {reference} beyond "
        f"{limits} over {record.steps} steps x batch {record.batch}: "
        + "; ".join(record.failures())
    )
