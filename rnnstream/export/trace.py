"""Trace a PyTorch model to ONNX with every recurrent layer left as a placeholder node.

Each ``nn.LSTM``/``nn.GRU``/``nn.RNN``/``PeepholeLSTM`` in (a copy of) the model is swapped for a
:class:`RecurrentPlaceholder` that takes its state from the exported graph's inputs and emits one
``rnnstream.placeholder::Recurrent`` node; :mod:`rnnstream.export.splice` later replaces that node
with hand-built ONNX. The code around the recurrent layers (embeddings, projections, heads) goes
through ``torch.onnx.export`` (the torch.export-based exporter) as usual.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import onnx
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from rnnstream.errors import ExportError
from rnnstream.export.layers import RECURRENT_TYPES, RecurrentModule, RecurrentSpec
from rnnstream.export.messages import first_line
from rnnstream.export.packed import packed_input_refusal
from rnnstream.export.streaming_conv import StreamingConv, TimeConv, install_streaming_convs

if TYPE_CHECKING:
    from rnnstream.export.forward_args import StateArguments
    from rnnstream.export.heads import Heads

__all__ = ["PLACEHOLDER_DOMAIN", "RecurrentPlaceholder", "StateNames", "find_recurrent", "trace"]

PLACEHOLDER_DOMAIN = "rnnstream.placeholder"
_OPSET = 20
StandIn = TypeVar("StandIn", bound=nn.Module)


@dataclass(frozen=True)
class StateNames:
    """Graph names of one recurrent module's state inputs and outputs (``h`` first, then ``c``)."""

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


def find_recurrent(model: nn.Module) -> list[tuple[str, RecurrentModule]]:
    """Every ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` / ``PeepholeLSTM`` in ``model``, by name."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, RECURRENT_TYPES)]


def state_names(key: str, spec: RecurrentSpec, single: bool) -> StateNames:
    kinds = ("h", "c") if spec.has_cell_state else ("h",)
    prefix = "" if single else key.replace(".", "_") + "_"
    return StateNames(
        inputs=tuple(f"{prefix}{k}0" for k in kinds),
        outputs=tuple(f"{prefix}{k}n" for k in kinds),
    )


class RecurrentPlaceholder(nn.Module):
    """Stands in for a recurrent module while tracing: state comes from the graph's inputs."""

    def __init__(self, key: str, module: RecurrentModule) -> None:
        super().__init__()
        self.key = key
        self.spec = RecurrentSpec.of(module)
        self.state_in: tuple[torch.Tensor, ...] = ()
        self.state_out: tuple[torch.Tensor, ...] = ()

    @property
    def state_count(self) -> int:
        return 2 if self.spec.has_cell_state else 1

    def forward(self, x: torch.Tensor, hx: object = None) -> tuple:
        spec = self.spec
        if isinstance(x, PackedSequence):
            raise packed_input_refusal(self.key)
        if x.dim() != 3:
            raise ExportError(
                f"{self.key or 'the recurrent layer'} got a {x.dim()}-D input; only batched 3-D "
                "input exports (unbatched input has no batch axis to stream over)"
            )
        if x.shape[-1] != spec.input_size:
            raise ExportError(
                f"{self.key or 'the recurrent layer'} expects {spec.input_size} input features "
                f"but was traced with {x.shape[-1]}: the example input was guessed wrong; pass "
                "example= (a tensor shaped like the model's real input)"
            )
        batch = x.shape[0] if spec.batch_first else x.shape[1]
        rows = spec.num_layers * spec.dirs
        shapes = [
            [x.shape[0], x.shape[1], spec.dirs * spec.out_size],
            [rows, batch, spec.out_size],
            [rows, batch, spec.hidden_size],
        ][: 1 + len(self.state_in)]
        y, *finals = torch.onnx.ops.symbolic_multi_out(
            f"{PLACEHOLDER_DOMAIN}::Recurrent",
            (x, *self.state_in),
            {"key": self.key},
            dtypes=[x.dtype] * len(shapes),
            shapes=shapes,
            version=1,
        )
        self.state_out = tuple(finals)
        return (y, tuple(finals)) if spec.has_cell_state else (y, finals[0])


class StateWrapper(nn.Module):
    """``forward(x, *states)`` around a model whose stand-ins (recurrent placeholders, cells,
    streaming convolutions) take the graph's state inputs, in order, ``state_count`` each.

    State arguments of the model's forward are given the graph's state inputs themselves.
    """

    def __init__(self, model: nn.Module, stand_ins: list, arguments: StateArguments) -> None:
        super().__init__()
        self.model = model
        self.stand_ins = stand_ins
        self.arguments = arguments

    def call_model(self, x: torch.Tensor, states: tuple[torch.Tensor, ...]) -> object:
        """The model's output on ``x``, each stand-in's state taken from ``states``."""
        it = iter(states)
        for s in self.stand_ins:
            s.state_in = tuple(next(it) for _ in range(s.state_count))
            s.state_out = ()
        return self.model(x, *self.arguments.from_states(list(states)))

    def final_states(self) -> tuple[torch.Tensor, ...]:
        """The stand-ins' new states, in the order their states came in."""
        return tuple(t for s in self.stand_ins for t in s.state_out)


class _Exportable(StateWrapper):
    """``forward(x, *states) -> (*heads, *final_states)``."""

    def __init__(
        self,
        model: nn.Module,
        stand_ins: list[RecurrentPlaceholder | StreamingConv],
        arguments: StateArguments,
        heads: Heads,
        batch_first: bool,
    ) -> None:
        super().__init__(model, stand_ins, arguments)
        self.heads = heads
        self.batch_first = batch_first

    def forward(self, x: torch.Tensor, *states: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.call_model(x, states)
        heads = self.heads.select_unflattened(out, x, self.batch_first)
        return (*heads, *self.final_states())


def primary_output(out: object) -> torch.Tensor:
    """The tensor a model returns, or the first element of ``(y, state)``-style results."""
    if isinstance(out, (tuple, list)) and out:
        out = out[0]
    if not isinstance(out, torch.Tensor):
        raise ExportError(
            f"the model's forward returned {type(out).__name__}; expected a tensor or a tuple "
            "whose first element is the output tensor"
        )
    return out


def _with_placeholders(model: nn.Module) -> tuple[nn.Module, list[RecurrentPlaceholder]]:
    recurrent = find_recurrent(model)
    if isinstance(model, RECURRENT_TYPES):
        placeholder = RecurrentPlaceholder("", model)
        return placeholder, [placeholder]
    clone = copy.deepcopy(model)
    return clone, swap_modules(clone, recurrent, RecurrentPlaceholder)


def swap_modules(
    model: nn.Module,
    named: list[tuple[str, nn.Module]],
    stand_in: Callable[[str, nn.Module], StandIn],
) -> list[StandIn]:
    """Replace (in place) each submodule ``named`` in ``model`` by ``stand_in(name, module)``;
    the stand-ins in that order."""
    stand_ins = []
    for name, module in named:
        replacement = stand_in(name, module)
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent), attr, replacement)
        stand_ins.append(replacement)
    return stand_ins


def trace(
    model: nn.Module,
    example: torch.Tensor,
    states: list[tuple[RecurrentSpec, StateNames]],
    batch_first: bool,
    arguments: StateArguments,
    heads: Heads,
    convs: tuple[TimeConv, ...] = (),
) -> onnx.ModelProto:
    """Export ``model`` to ONNX with the recurrent layers as placeholder nodes.

    The graph's outputs are ``heads`` (by their names), then the final states. Each causal
    convolution of ``convs`` streams, its context an extra state after the recurrent ones (see
    :mod:`rnnstream.export.streaming_conv`).
    """
    clone, placeholders = _with_placeholders(model)
    streaming = install_streaming_convs(clone, list(convs))
    wrapper = _Exportable(clone, [*placeholders, *streaming], arguments, heads, batch_first)
    batch_axis = 0 if batch_first else 1
    batch_dim = torch.export.Dim("batch")
    time_dim = torch.export.Dim("time")
    dynamic: list[dict] = [{batch_axis: batch_dim, 1 - batch_axis: time_dim}]
    state_examples = []
    names_in, names_out = ["x"], list(heads.names)
    batch = example.shape[batch_axis]
    for spec, names in states:
        for size in (spec.out_size, spec.hidden_size)[: len(names.inputs)]:
            state_examples.append(torch.zeros(spec.num_layers * spec.dirs, batch, size))
            dynamic.append({1: batch_dim})
        names_in += names.inputs
        names_out += names.outputs
    for conv in convs:
        state_examples.append(torch.zeros(batch, *conv.context_shape))
        dynamic.append({0: batch_dim})
        names_in.append(conv.state_names[0])
        names_out.append(conv.state_names[1])
    return export_quietly(
        wrapper,
        (example, *state_examples),
        names_in,
        names_out,
        (dynamic[0], tuple(dynamic[1:])),
        "the code around the recurrent layers",
    )


def export_quietly(
    wrapper: nn.Module,
    args: tuple[torch.Tensor, ...],
    names_in: list[str],
    names_out: list[str],
    dynamic_shapes: tuple,
    what: str,
) -> onnx.ModelProto:
    """``torch.onnx.export`` (torch.export-based) without its warnings and logging; an
    ExportError raised while tracing is re-raised as it is, any other failure becomes one
    naming ``what`` was being exported."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            logging.getLogger("torch.onnx").setLevel(logging.ERROR)
            program = torch.onnx.export(
                wrapper,
                args,
                dynamo=True,
                input_names=names_in,
                output_names=names_out,
                dynamic_shapes=dynamic_shapes,
                opset_version=_OPSET,
                verbose=False,
                optimize=True,
            )
    except ExportError:
        raise
    except Exception as e:
        cause = e
        while cause.__cause__ is not None and not isinstance(cause, ExportError):
            cause = cause.__cause__
        if isinstance(cause, ExportError):
            raise cause from e
        raise ExportError(f"torch.onnx.export failed on {what}: {first_line(cause)}") from e
    return program.model_proto
