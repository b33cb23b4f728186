"""Parity: the exported ONNX model, stepped by the runtime, against one PyTorch forward."""

from __future__ import annotations

import numpy as np
import onnxruntime
import torch
from torch import nn

from rnnstream.export.forward_args import state_arguments
from rnnstream.export.heads import output_tensors, run_heads
from rnnstream.export.streaming_conv import TimeConv, find_time_convs
from rnnstream.export.trace import find_recurrent
from rnnstream.export.trace_cell_loop import find_cells
from rnnstream.runtime import Model, Signature, TensorSpec
from rnnstream.runtime.parity_record import ParityRecord, TensorError

__all__ = [
    "measure_parity",
    "onnx_reference",
    "torch_outputs",
    "torch_reference",
    "unflatten_reference",
    "whole_sequence_errors",
]


def torch_reference(
    model: nn.Module, x: torch.Tensor, time_axis: int | None = None
) -> tuple[np.ndarray, list[np.ndarray]]:
    """One full-sequence forward from the zero state: the first output and every final state."""
    ys, states = torch_outputs(model, x, time_axis)
    return ys[0], states


def torch_outputs(
    model: nn.Module, x: torch.Tensor, time_axis: int | None = None
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """One full-sequence forward from the zero state: every output head and every final state.

    State arguments of the forward get zeros (:mod:`rnnstream.export.forward_args`).
    Final states come in :func:`find_recurrent` order (the order of the signature's states),
    whatever order the modules run in. In a cell-loop model (no recurrent layer) they are the
    states each cell returned at its last call, in :func:`find_cells` order. Given the input's
    ``time_axis``, the final contexts of the streaming convolutions follow.
    """
    finals: dict[str, list[np.ndarray]] = {}

    def keeper(name: str):
        def keep_final(module: nn.Module, _args: object, out: object) -> None:
            state = out if isinstance(module, nn.RNNCellBase) else out[1]
            state = state if isinstance(state, tuple) else (state,)
            finals[name] = [t.detach().numpy() for t in state]

        return keep_final

    recurrent = find_recurrent(model) or find_cells(model)
    hooks = [m.register_forward_hook(keeper(name)) for name, m in recurrent]
    convs = _streaming_convs(model, x, time_axis)
    contexts: dict[str, np.ndarray] = {}

    def context_keeper(conv: TimeConv):
        def keep_context(_module: nn.Module, args: tuple) -> None:
            contexts.setdefault(conv.key, conv.final_context(args[0]).numpy())

        return keep_context

    hooks += [
        model.get_submodule(conv.key).register_forward_pre_hook(context_keeper(conv))
        for conv in convs
    ]
    try:
        places, out = run_heads(model, x, state_arguments(model, x))
    finally:
        for h in hooks:
            h.remove()
    found = dict(output_tensors(out, "output"))
    places = places or list(found)[:1]  # the output is the state itself (see find_heads)
    ys = [found[place].numpy() for place in places]
    states = [t for name, _ in recurrent for t in finals.get(name, [])]
    return ys, states + [contexts[conv.key] for conv in convs if conv.key in contexts]


def _streaming_convs(model: nn.Module, x: torch.Tensor, time_axis: int | None) -> list[TimeConv]:
    bidirectional = any(getattr(m, "bidirectional", False) for _, m in find_recurrent(model))
    if time_axis is None or bidirectional or not (find_recurrent(model) or find_cells(model)):
        return []
    probe = x.narrow(time_axis, 0, min(x.shape[time_axis], 8))
    return find_time_convs(model, probe, time_axis)


def onnx_reference(model: Model, x: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """One whole-sequence run of a streamed (float32) model from the zero state, in its layout:
    the first output and every final state."""
    ys, states = onnx_outputs(model, x)
    return ys[0], states


def onnx_outputs(model: Model, x: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Like :func:`onnx_reference`, with every output."""
    sig = model.signature
    rows = x.shape[sig.input.batch_axis] if sig.input.batch_axis is not None else 1
    results = model.runner.run({sig.input.name: x, **model.runner.zero_state(rows)})
    return results[: len(sig.outputs)], results[len(sig.outputs) :]


def _errors(got: np.ndarray, ref: np.ndarray) -> TensorError:
    diff = np.abs(got.astype(np.float64) - ref.astype(np.float64))
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    max_abs = float(diff.max()) if diff.size else 0.0
    if not np.all(np.isfinite(got)):
        max_abs = float("inf")
    return TensorError(max_abs_err=max_abs, max_rel_err=max_abs / max(scale, 1e-30))


def _to_batch_time(a: np.ndarray, batch_axis: int, time_axis: int | None) -> np.ndarray:
    """``a`` in the caller's layout, as a stream returns it: batch first, then time (if any).

    A state returned as an output (an encoder's ``h_n``: ``[layers, batch, hidden]``) has its
    batch axis second and no time axis."""
    if time_axis is None:
        return np.moveaxis(a, batch_axis, 0)
    return np.moveaxis(a, (batch_axis, time_axis), (0, 1))


def unflatten_reference(
    y: np.ndarray, out: TensorSpec, x_shape: tuple[int, ...], sig: Signature
) -> np.ndarray:
    """PyTorch's ``[T * B, ...]`` head (``view(-1, V)``) split as the graph splits it: into the
    output's time and batch axes (:mod:`rnnstream.export.flattened`)."""
    if out.time_axis is None or y.ndim != len(out.shape) - 1:
        return y
    steps, batch = x_shape[sig.input.time_axis], x_shape[sig.input.batch_axis]
    lead = (steps, batch) if out.time_axis == 0 else (batch, steps)
    return y.reshape(*lead, *y.shape[1:])


def measure_parity(
    model: nn.Module | Model,
    onnx_model: Model,
    x: torch.Tensor,
    chunk: int,
    atol: float,
    rtol: float = 0.0,
) -> ParityRecord:
    """Compare the ONNX model with a reference on input ``x`` (in the model's own layout).

    The reference is the PyTorch model, or a float32 streamed model run on whole sequences. A
    streamable model is run step by step and in chunks of ``chunk`` steps; a whole-sequence model
    (bidirectional) in one run. Every output and final state must be within ``atol`` absolutely
    or within ``rtol`` relative to its largest magnitude (``max_rel_err``). Returns the record
    stored in the model's signature (without a task metric).
    """
    sig: Signature = onnx_model.signature
    if isinstance(model, nn.Module):
        ys_ref, states_ref = torch_outputs(model, x, sig.input.time_axis)
    else:
        ys_ref, states_ref = onnx_outputs(model, x.numpy())
    refs = {
        out.name: _to_batch_time(
            unflatten_reference(y, out, x.shape, sig), out.batch_axis, out.time_axis
        )
        for out, y in zip(sig.outputs, ys_ref)
    }
    x_np = _to_batch_time(x.numpy(), sig.input.batch_axis, sig.input.time_axis)
    batch, steps = x_np.shape[0], x_np.shape[1]
    runs: dict[str, tuple[dict[str, np.ndarray], list[np.ndarray]]] = {}
    if sig.streamable:
        stream = onnx_model.stream(batch=batch)
        steps_out = [_by_name(stream.step(x_np[:, t]), sig) for t in range(steps)]
        runs["step"] = (
            {o.name: _stack_time([y[o.name] for y in steps_out], o.time_axis) for o in sig.outputs},
            list(stream.state.values()),
        )
        stream.reset()
        starts = range(0, steps, chunk)
        chunks = [_by_name(stream.feed(x_np[:, t : t + chunk]), sig) for t in starts]
        runs["chunk"] = (
            {
                o.name: np.concatenate([y[o.name] for y in chunks], axis=1)
                if o.time_axis is not None
                else chunks[-1][o.name]
                for o in sig.outputs
            },
            list(stream.state.values()),
        )
    else:
        results = onnx_model.run(x_np)
        runs["sequence"] = (
            {o.name: results[o.name] for o in sig.outputs},
            [results[s.output] for s in sig.states],
        )
    errors: dict[str, dict[str, TensorError]] = {}
    for mode, (ys, states) in runs.items():
        tensors = {name: _errors(ys[name], ref) for name, ref in refs.items()}
        for spec, got, ref in zip(sig.states, states, states_ref):
            tensors[spec.output] = _errors(got, ref)
        errors[mode] = tensors
    every = [err for tensors in errors.values() for err in tensors.values()]
    return ParityRecord(
        steps=steps,
        batch=batch,
        atol=atol,
        rtol=rtol,
        reference="pytorch" if isinstance(model, nn.Module) else "onnxruntime float32",
        torch=torch.__version__,
        onnxruntime=onnxruntime.__version__,
        max_abs_err=max(err.max_abs_err for err in every),
        max_rel_err=max(err.max_rel_err for err in every),
        passed=all(err.within(atol, rtol) for err in every),
        precision=sig.precision,
        chunk_size=chunk if sig.streamable else None,
        errors=errors,
    )


def whole_sequence_errors(
    model: nn.Module, onnx_model: Model, x: torch.Tensor
) -> dict[str, TensorError]:
    """Each output's and final state's error in one whole-sequence run of the file (from the
    zero state, in the model's layout) against PyTorch's."""
    sig = onnx_model.signature
    ys_ref, states_ref = torch_outputs(model, x, sig.input.time_axis)
    ys, states = onnx_outputs(onnx_model, x.numpy())
    errors = {
        out.name: _errors(y, unflatten_reference(ref, out, x.shape, sig))
        for out, y, ref in zip(sig.outputs, ys, ys_ref)
    }
    for spec, got, ref in zip(sig.states, states, states_ref):
        errors[spec.output] = _errors(got, ref)
    return errors


def _by_name(result: np.ndarray | dict[str, np.ndarray], sig: Signature) -> dict:
    """A stream's result as ``{output name: array}`` (one output comes as a bare array)."""
    return result if isinstance(result, dict) else {sig.outputs[0].name: result}


def _stack_time(ys: list[np.ndarray], time_axis: int | None) -> np.ndarray:
    """Per-step outputs ``[B, ...]`` → ``[B, T, ...]``; without a time axis, the last one."""
    return np.stack(ys, axis=1) if time_axis is not None else ys[-1]
