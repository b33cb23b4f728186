"""Cell-loop models: one traced step of an ``nn.LSTMCell``/``GRUCell``/``RNNCell`` loop, in a Scan.

A model whose ``forward`` loops over time calling cells cannot be traced with a dynamic time axis.
It is traced on a single step instead (time fixed at 1, batch dynamic), each cell swapped for a
:class:`CellPlaceholder` that runs the real cell on state taken from the graph's inputs and hands
its new state to the graph's outputs. That one-step graph becomes the body of an ONNX ``Scan`` over
the time axis: a chunk of any length runs in one call and a step is a chunk of one, so the runtime
streams the file like any other. Each cell must run exactly once per step.

An ``nn.LSTM``/``GRU``/``RNN`` called once per time step in such a loop (``for t in
range(T): out, h = self.lstm(x[:, t:t+1], h)``) is a cell too: :func:`layers_run_per_step`
finds that pattern, and the step is traced with the layer's placeholder
(:class:`~rnnstream.export.trace.RecurrentPlaceholder`, its state ``[layers, batch, hidden]``)
spliced into real ONNX layers before it becomes the Scan's body.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper
from torch import nn

from rnnstream.errors import ExportError
from rnnstream.export.layers import RecurrentSpec
from rnnstream.export.splice import splice_recurrent
from rnnstream.export.streaming_conv import StreamingConv, TimeConv, install_streaming_convs
from rnnstream.export.trace import (
    RecurrentPlaceholder,
    StateNames,
    StateWrapper,
    export_quietly,
    find_recurrent,
    primary_output,
    state_names,
)
from rnnstream.runtime import StateSpec

if TYPE_CHECKING:
    from rnnstream.export.forward_args import StateArguments

__all__ = ["CellLoop", "find_cells", "layers_run_per_step", "trace_cell_loop"]

_STEP = "step/"  # prefix of every name inside the Scan body


def find_cells(model: nn.Module) -> list[tuple[str, nn.RNNCellBase]]:
    """Every ``nn.LSTMCell`` / ``nn.GRUCell`` / ``nn.RNNCell`` in ``model``, by qualified name."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, nn.RNNCellBase)]


def cell_state_names(key: str, cell: nn.RNNCellBase) -> StateNames:
    """``<path>_h0``/``<path>_c0`` → ``<path>_hn``/``<path>_cn`` (dots of the path as ``_``)."""
    kinds = ("h", "c") if isinstance(cell, nn.LSTMCell) else ("h",)
    prefix = key.replace(".", "_") + "_"
    return StateNames(
        inputs=tuple(f"{prefix}{k}0" for k in kinds), outputs=tuple(f"{prefix}{k}n" for k in kinds)
    )


def cell_kind(cell: nn.RNNCellBase) -> str:
    """The cell's name in :data:`~rnnstream.cells.CELLS`."""
    if isinstance(cell, nn.LSTMCell):
        return "lstm"
    if isinstance(cell, nn.GRUCell):
        return "gru"
    return "rnn_" + cell.nonlinearity


@dataclass(frozen=True)
class CellLoop:
    """A traced cell-loop model: the Scan graph, its state specs (:func:`find_cells` order)."""

    model: onnx.ModelProto
    states: tuple[StateSpec, ...]
    cells: dict[str, dict]


class CellPlaceholder(nn.Module):
    """Stands in for a cell while tracing one step: state comes from the graph's inputs."""

    def __init__(self, key: str, cell: nn.RNNCellBase) -> None:
        super().__init__()
        self.key = key
        self.cell = cell
        self.state_in: tuple[torch.Tensor, ...] = ()
        self.state_out: tuple[torch.Tensor, ...] = ()

    @property
    def state_count(self) -> int:
        return 2 if isinstance(self.cell, nn.LSTMCell) else 1

    def forward(self, x: torch.Tensor, hx: object = None) -> torch.Tensor | tuple:
        if self.state_out:
            raise ExportError(
                f"cell {self.key!r} runs more than once per step; each cell must run exactly "
                "once per time step to carry one state"
            )
        if x.dim() != 2:
            raise ExportError(
                f"cell {self.key!r} got a {x.dim()}-D input; only batched [batch, features] "
                "steps export"
            )
        if isinstance(self.cell, nn.LSTMCell):
            h, c = self.cell(x, self.state_in)
            self.state_out = (h, c)
            return h, c
        h = self.cell(x, self.state_in[0])
        self.state_out = (h,)
        return h


class _OneStep(StateWrapper):
    """``forward(x, *states) -> (y, *new_states)`` for one time step of a cell-loop model; the
    states of the streaming convolutions follow the cells'."""

    def __init__(
        self,
        model: nn.Module,
        placeholders: list[CellPlaceholder | RecurrentPlaceholder],
        arguments: StateArguments,
        streaming: list[StreamingConv],
    ) -> None:
        super().__init__(model, [*placeholders, *streaming], arguments)
        self.placeholders = placeholders

    def forward(self, x: torch.Tensor, *states: torch.Tensor) -> tuple[torch.Tensor, ...]:
        y = primary_output(self.call_model(x, states))
        for p in self.placeholders:
            if not p.state_out:
                raise ExportError(f"cell {p.key!r} did not run in the traced step")
        return (y, *self.final_states())


def layers_run_per_step(
    model: nn.Module, example: torch.Tensor, time_axis: int, arguments: StateArguments
) -> bool:
    """Whether ``model``'s recurrent layers each run once per time step of ``example``, on one
    step (a Python loop over time calling ``nn.LSTM``/``GRU``/``RNN``), which exports as a cell
    loop. A layer run several times otherwise is refused: it carries one state per stream."""
    lengths: dict[str, list[int | None]] = {name: [] for name, _ in find_recurrent(model)}

    def recorder(name: str, layer: nn.Module) -> Callable:
        def record(_module: nn.Module, args: tuple) -> None:
            x = args[0] if args else None
            is_3d = isinstance(x, torch.Tensor) and x.dim() == 3
            lengths[name].append(x.shape[1 if layer.batch_first else 0] if is_3d else None)

        return record

    layers = find_recurrent(model)
    hooks = [m.register_forward_pre_hook(recorder(name, m)) for name, m in layers]
    try:
        with torch.no_grad():
            arguments.call(model, example)
    except Exception:  # a user's forward can raise anything: the usual path names the failure
        return False
    finally:
        for hook in hooks:
            hook.remove()
    steps = example.shape[time_axis]
    if all(runs == [1] * steps for runs in lengths.values()):
        for name, layer in layers:
            if getattr(layer, "proj_size", 0):
                raise ExportError(
                    f"{name!r} (an LSTM with proj_size) runs once per time step, which exports "
                    "only for a layer without proj_size; call it once on the whole sequence "
                    "(out, h = self.rnn(x, h))"
                )
        return True
    for name, runs in lengths.items():
        if len(runs) > 1:
            raise ExportError(
                f"recurrent module {name or '<model>'!r} runs more than once per forward ("
                f"{len(runs)} times over {steps} steps, on inputs of "
                f"{', '.join(map(str, runs))} steps): a stream "
                "carries one state per module.\nCall it once on the whole sequence (out, h = "
                "self.rnn(x, h)) or once per time step; give each other use a module of its own."
            )
    return False


def _output_time_axis(
    model: nn.Module, example: torch.Tensor, time_axis: int, arguments: StateArguments
) -> int:
    """The output's time axis, found by running the model on 2 and on 3 steps."""
    with torch.no_grad():
        shapes = [
            primary_output(
                arguments.call(model, example.narrow(time_axis, 0, n).contiguous())
            ).shape
            for n in (2, 3)
        ]
    axes = [a for a, (s2, s3) in enumerate(zip(*shapes)) if (s2, s3) == (2, 3)]
    ahead = [s2 - 2 for s2, s3 in zip(*shapes) if s3 == s2 + 1 and s2 > 2]
    if not axes and len(ahead) == 1:
        raise ExportError(
            f"a cell-loop model's output has {ahead[0]} more step(s) than its input (shapes "
            f"{list(shapes[0])} for 2 steps, {list(shapes[1])} for 3): it predicts future steps "
            "from its own output, which a stream does not do; export it with no future steps "
            "(future=0), one output per input step"
        )
    if len(shapes[0]) != len(shapes[1]) or len(axes) != 1:
        raise ExportError(
            f"a cell-loop model's output needs one time axis (one output per step); shapes "
            f"{list(shapes[0])} for 2 steps and {list(shapes[1])} for 3"
        )
    return axes[0]


def trace_cell_loop(
    model: nn.Module,
    example: torch.Tensor,
    batch_first: bool,
    output_name: str,
    arguments: StateArguments,
    convs: tuple[TimeConv, ...] = (),
) -> CellLoop:
    """Trace one step of ``model`` and wrap it in a Scan over ``example``'s time axis.

    ``example`` has at least 3 time steps, in the model's layout. The graph takes ``x`` with
    dynamic batch and time, and each cell's state ``[batch, hidden]`` (a recurrent layer run once
    per step, :func:`layers_run_per_step`: ``[layers, batch, hidden]``), then the context of each
    causal convolution of ``convs`` (see :mod:`rnnstream.export.streaming_conv`); state the forward
    takes as ``arguments`` is supplied from those inputs (:mod:`rnnstream.export.forward_args`).
    """
    if example.dim() < 2 or example.shape[1 if batch_first else 0] < 3:
        raise ExportError("the example input needs batch and time axes and 3 steps or more")
    batch_axis, time_axis = (0, 1) if batch_first else (1, 0)
    out_time_axis = _output_time_axis(model, example, time_axis, arguments)
    clone = copy.deepcopy(model)
    placeholders, states = _install_placeholders(clone)
    batch_dim = torch.export.Dim("batch")
    batch = example.shape[batch_axis]
    step_x = example.narrow(time_axis, 0, 1).contiguous()
    names_in = ["x", *(s.input for s in states)]
    names_out = [output_name, *(s.output for s in states)]
    state_examples = [torch.zeros(s.concrete_shape(batch)) for s in states]
    dynamic_states = [{s.batch_axis: batch_dim} for s in states]
    streaming = install_streaming_convs(clone, list(convs))
    for conv in convs:
        names_in.append(conv.state_names[0])
        names_out.append(conv.state_names[1])
        state_examples.append(torch.zeros(batch, *conv.context_shape))
        states.append(conv.state_spec())
        dynamic_states.append({0: batch_dim})
    step = export_quietly(
        _OneStep(clone, placeholders, arguments, streaming),
        (step_x, *state_examples),
        names_in,
        names_out,
        ({batch_axis: batch_dim}, tuple(dynamic_states)),
        "one step of the cell loop",
    )
    layers = find_recurrent(model)
    if layers:
        splice_recurrent(step, dict(layers))
    scan = _scan_over_time(step, time_axis, out_time_axis)
    info = {
        name: {"cell": cell_kind(c), "input_size": c.input_size, "hidden_size": c.hidden_size}
        for name, c in find_cells(model)
    }
    info |= {name: {**RecurrentSpec.of(m).__dict__, "per_step": True} for name, m in layers}
    return CellLoop(scan, tuple(states), info)


def _install_placeholders(
    clone: nn.Module,
) -> tuple[list[CellPlaceholder | RecurrentPlaceholder], list[StateSpec]]:
    """Swap each cell of ``clone`` (or each recurrent layer, run once per step) for its
    placeholder: the placeholders and their state specs, in order."""
    placeholders: list[CellPlaceholder | RecurrentPlaceholder] = []
    states: list[StateSpec] = []
    for name, cell in find_cells(clone):
        placeholders.append(CellPlaceholder(name, cell))
        names = cell_state_names(name, cell)
        for s_in, s_out in zip(names.inputs, names.outputs):
            states.append(StateSpec(s_in, s_out, "float32", ("batch", cell.hidden_size), 0))
    layers = find_recurrent(clone)
    for name, layer in layers:
        placeholders.append(RecurrentPlaceholder(name, layer))
        spec = RecurrentSpec.of(layer)
        names = state_names(name, spec, single=len(layers) == 1)
        sizes = (spec.out_size, spec.hidden_size)
        for size, s_in, s_out in zip(sizes, names.inputs, names.outputs):
            shape = (spec.num_layers * spec.dirs, "batch", size)
            states.append(StateSpec(s_in, s_out, "float32", shape, batch_axis=1))
    for placeholder in placeholders:
        parent, _, attr = placeholder.key.rpartition(".")
        setattr(clone.get_submodule(parent), attr, placeholder)
    return placeholders, states


def _scan_over_time(step: onnx.ModelProto, time_axis: int, out_time_axis: int) -> onnx.ModelProto:
    """The one-step model ``step`` (in place) as the body of a Scan over its input's time axis.

    Every name inside the body gets the ``step/`` prefix; the weights move to the outer graph,
    where the body reads them.
    """
    graph = step.graph
    if any(
        a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
        for n in graph.node
        for a in n.attribute
    ):
        raise ExportError("the traced step has control flow; a cell loop's step must not branch")
    x_in, *state_in = list(graph.input)
    y_out, *state_out = list(graph.output)
    rename = {v.name: _STEP + v.name for v in [*graph.input, *graph.output, *graph.value_info]}
    rename |= {i.name: _STEP + i.name for i in graph.initializer}
    rename |= {o: _STEP + o for n in graph.node for o in n.output}
    body_nodes = []
    for node in graph.node:
        new = copy.deepcopy(node)
        new.input[:] = [rename.get(i, i) if i else i for i in node.input]
        new.output[:] = [rename[o] if o else o for o in node.output]
        new.name = _STEP + node.name
        body_nodes.append(new)
    axes_in = _STEP + "time_axis_in"
    axes_out = _STEP + "time_axis_out"
    x_t, y_t = _STEP + "x_t", _STEP + "y_t"
    body_nodes.insert(0, helper.make_node("Unsqueeze", [x_t, axes_in], [rename[x_in.name]]))
    body_nodes.append(helper.make_node("Squeeze", [rename[y_out.name], axes_out], [y_t]))
    # Body outputs get names of their own: one tensor may be both the output and a state.
    state_t = [_STEP + v.name + "_t" for v in state_out]
    for value, name in zip(state_out, state_t):
        body_nodes.append(helper.make_node("Identity", [rename[value.name]], [name]))

    def renamed(
        value: onnx.ValueInfoProto, name: str, drop_axis: int | None = None
    ) -> onnx.ValueInfoProto:
        new = copy.deepcopy(value)
        new.name = name
        if drop_axis is not None:
            del new.type.tensor_type.shape.dim[drop_axis]
        return new

    # An LSTM operator's weights (a layer stepped in the loop) stay in the body, beside it:
    # onnxruntime's int8 quantiser looks for W and R in the operator's own graph. The other
    # weights move out.
    weights = {
        name
        for node in graph.node
        if node.op_type == "LSTM"
        for name in [*node.input[1:4], *node.input[7:8]]
    }
    initializers, body_initializers = [], []
    for init in graph.initializer:
        new = copy.deepcopy(init)
        new.name = rename[init.name]
        (body_initializers if init.name in weights else initializers).append(new)
    body = helper.make_graph(
        body_nodes,
        "cell_loop_step",
        [renamed(v, rename[v.name]) for v in state_in] + [renamed(x_in, x_t, time_axis)],
        [renamed(v, n) for v, n in zip(state_out, state_t)] + [renamed(y_out, y_t, out_time_axis)],
        initializer=body_initializers,
        value_info=[renamed(v, rename[v.name]) for v in graph.value_info],
    )
    initializers += [
        numpy_helper.from_array(_axes(time_axis), axes_in),
        numpy_helper.from_array(_axes(out_time_axis), axes_out),
    ]
    scan = helper.make_node(
        "Scan",
        [v.name for v in state_in] + [x_in.name],
        [v.name for v in state_out] + [y_out.name],
        name="cell_loop",
        body=body,
        num_scan_inputs=1,
        scan_input_axes=[time_axis],
        scan_output_axes=[out_time_axis],
    )
    outer_x = copy.deepcopy(x_in)
    outer_x.type.tensor_type.shape.dim[time_axis].Clear()
    outer_x.type.tensor_type.shape.dim[time_axis].dim_param = "time"
    outer_y = copy.deepcopy(y_out)
    outer_y.type.tensor_type.shape.dim[out_time_axis].Clear()
    outer_y.type.tensor_type.shape.dim[out_time_axis].dim_param = "time"
    del graph.node[:], graph.initializer[:], graph.value_info[:], graph.input[:], graph.output[:]
    graph.node.append(scan)
    graph.initializer.extend(initializers)
    graph.input.extend([outer_x, *state_in])
    graph.output.extend([outer_y, *state_out])
    return step


def _axes(axis: int) -> np.ndarray:
    return np.asarray([axis], dtype=np.int64)
