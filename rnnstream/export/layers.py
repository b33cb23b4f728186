"""ONNX subgraphs for PyTorch's recurrent layers, built by hand from the module's weights.

No exporter is trusted with the recurrence itself (see the known traps in the README): each
``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` becomes onnx ``LSTM`` / ``GRU`` / ``RNN`` operators, one per
layer in layout 0 (time-major), with transposes at the edges for ``batch_first``; a
:class:`~rnnstream.models.peephole.PeepholeLSTM` becomes ``LSTM`` operators with the peephole
input ``P``. An LSTM with ``proj_size`` has no ONNX operator, so its layers become a ``Scan`` over
an explicit cell.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from rnnstream.errors import ExportError
from rnnstream.models.peephole import PeepholeLSTM

__all__ = ["RECURRENT_TYPES", "GraphBuilder", "RecurrentModule", "RecurrentSpec", "build_recurrent"]

RECURRENT_TYPES = (nn.RNNBase, PeepholeLSTM)
RecurrentModule = nn.RNNBase | PeepholeLSTM

# Row order of the gate blocks: PyTorch's order, permuted into ONNX's.
_LSTM_TO_ONNX = [0, 3, 1, 2]  # torch (i, f, g, o) -> onnx (i, o, f, c)
_GRU_TO_ONNX = [1, 0, 2]  # torch (r, z, n) -> onnx (z, r, h)
_PEEPHOLE_TO_ONNX = [0, 2, 1]  # PeepholeLSTM (i, f, o) -> onnx P (i, o, f)


@dataclass(frozen=True)
class RecurrentSpec:
    """The configuration of one PyTorch recurrent module."""

    cell: str  # one of rnnstream.cells.CELLS
    input_size: int
    hidden_size: int
    num_layers: int
    bias: bool
    batch_first: bool
    bidirectional: bool
    proj_size: int = 0
    peephole: bool = False

    @classmethod
    def of(cls, module: RecurrentModule) -> RecurrentSpec:
        if isinstance(module, PeepholeLSTM):
            return cls(
                cell="lstm",
                input_size=module.input_size,
                hidden_size=module.hidden_size,
                num_layers=module.num_layers,
                bias=module.bias,
                batch_first=module.batch_first,
                bidirectional=False,
                peephole=True,
            )
        if isinstance(module, nn.LSTM):
            cell = "lstm"
        elif isinstance(module, nn.GRU):
            cell = "gru"
        elif isinstance(module, nn.RNN):
            cell = "rnn_" + module.nonlinearity
        else:
            raise ExportError(f"unsupported recurrent module type {type(module).__name__}")
        return cls(
            cell=cell,
            input_size=module.input_size,
            hidden_size=module.hidden_size,
            num_layers=module.num_layers,
            bias=module.bias,
            batch_first=module.batch_first,
            bidirectional=module.bidirectional,
            proj_size=getattr(module, "proj_size", 0),
        )

    @property
    def dirs(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def out_size(self) -> int:
        """Size of h (and of each direction's output): the projection size when there is one."""
        return self.proj_size or self.hidden_size

    @property
    def has_cell_state(self) -> bool:
        return self.cell == "lstm"


@dataclass
class GraphBuilder:
    """Collects nodes and initializers, handing out unique tensor names under a prefix."""

    prefix: str
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: list[onnx.TensorProto] = field(default_factory=list)
    _ids: itertools.count = field(default_factory=itertools.count)

    def name(self, hint: str) -> str:
        return f"{self.prefix}/{hint}_{next(self._ids)}"

    def const(self, hint: str, value: np.ndarray) -> str:
        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(np.array(value, order="C"), name))
        return name

    def ints(self, hint: str, values: list[int]) -> str:
        return self.const(hint, np.asarray(values, dtype=np.int64))

    def op(
        self, op_type: str, inputs: list[str], n_out: int = 1, out: list[str] | None = None, **attrs
    ) -> list[str]:
        outputs = out or [self.name(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(
            helper.make_node(op_type, inputs, outputs, name=self.name(op_type), **attrs)
        )
        return outputs


def _weights(module: RecurrentModule, layer: int, direction: int) -> dict[str, np.ndarray]:
    suffix = f"l{layer}" + ("_reverse" if direction else "")
    out = {}
    for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr", "weight_ph"):
        param = getattr(module, f"{kind}_{suffix}", None)
        if param is not None:
            out[kind] = param.detach().to(torch.float32).cpu().numpy()
    return out


def _reorder(w: np.ndarray, order: list[int]) -> np.ndarray:
    blocks = w.reshape(len(order), -1, *w.shape[1:])
    return blocks[order].reshape(w.shape)


def build_recurrent(
    module: RecurrentModule,
    g: GraphBuilder,
    x: str,
    states_in: list[str],
    y: str,
    states_out: list[str],
) -> None:
    """Emit the nodes computing ``module`` from tensor ``x`` and states into ``g``.

    ``x``/``y`` are in the module's own layout; ``states_in``/``states_out`` are ``[h]`` or
    ``[h, c]`` in PyTorch's ``[layers*dirs, batch, size]`` layout.
    """
    spec = RecurrentSpec.of(module)
    layer_in = g.op("Transpose", [x], perm=[1, 0, 2])[0] if spec.batch_first else x
    finals: list[list[str]] = [[] for _ in states_in]
    for layer in range(spec.num_layers):
        layer_states = [_layer_slice(g, s, layer, spec) for s in states_in]
        build = _projected_lstm_layer if spec.proj_size else _native_layer
        layer_in, layer_finals = build(module, spec, g, layer, layer_in, layer_states)
        for acc, final in zip(finals, layer_finals):
            acc.append(final)
    if spec.batch_first:
        g.op("Transpose", [layer_in], perm=[1, 0, 2], out=[y])
    else:
        g.op("Identity", [layer_in], out=[y])
    for per_layer, out_name in zip(finals, states_out):
        if len(per_layer) == 1:
            g.op("Identity", per_layer, out=[out_name])
        else:
            g.op("Concat", per_layer, axis=0, out=[out_name])


def _layer_slice(g: GraphBuilder, state: str, layer: int, spec: RecurrentSpec) -> str:
    if spec.num_layers == 1:
        return state
    start, end = layer * spec.dirs, (layer + 1) * spec.dirs
    starts, ends, axes = g.ints("start", [start]), g.ints("end", [end]), g.ints("axis", [0])
    return g.op("Slice", [state, starts, ends, axes])[0]


def _native_layer(
    module: RecurrentModule,
    spec: RecurrentSpec,
    g: GraphBuilder,
    layer: int,
    x: str,
    states: list[str],
) -> tuple[str, list[str]]:
    """One layer as ONNX's own LSTM/GRU/RNN operator: ``[T, B, dirs*H]`` and the final states."""
    order = {"lstm": _LSTM_TO_ONNX, "gru": _GRU_TO_ONNX}.get(spec.cell, [0])
    per_dir = [_weights(module, layer, d) for d in range(spec.dirs)]
    w = np.stack([_reorder(p["weight_ih"], order) for p in per_dir])
    r = np.stack([_reorder(p["weight_hh"], order) for p in per_dir])
    inputs = [x, g.const(f"W_l{layer}", w), g.const(f"R_l{layer}", r)]
    if spec.bias:
        b = np.stack(
            [
                np.concatenate([_reorder(p["bias_ih"], order), _reorder(p["bias_hh"], order)])
                for p in per_dir
            ]
        )
        inputs.append(g.const(f"B_l{layer}", b))
    else:
        inputs.append("")
    inputs += ["", *states]  # no sequence_lens: every row runs every step
    if spec.peephole:  # P [dirs, 3H]: (i, o, f) per ONNX; i and f see c_{t-1}, o sees c_t
        peep = np.stack([p["weight_ph"][_PEEPHOLE_TO_ONNX].reshape(-1) for p in per_dir])
        inputs.append(g.const(f"P_l{layer}", peep))
    attrs: dict = {
        "hidden_size": spec.hidden_size,
        "direction": "bidirectional" if spec.bidirectional else "forward",
    }
    if spec.cell == "gru":
        attrs["linear_before_reset"] = 1  # PyTorch applies the reset gate after the linear map
    if spec.cell.startswith("rnn_"):
        activation = "Relu" if spec.cell == "rnn_relu" else "Tanh"
        attrs["activations"] = [activation] * spec.dirs
    op_type = {"lstm": "LSTM", "gru": "GRU"}.get(spec.cell, "RNN")
    outs = g.op(op_type, inputs, n_out=1 + len(states), **attrs)
    seq = outs[0]  # [T, dirs, B, H]
    if spec.dirs == 1:
        seq = g.op("Squeeze", [seq, g.ints("axis", [1])])[0]
    else:
        seq = g.op("Transpose", [seq], perm=[0, 2, 1, 3])[0]
        seq = g.op("Reshape", [seq, g.ints("shape", [0, 0, -1])])[0]
    return seq, outs[1:]


def _projected_lstm_layer(
    module: RecurrentModule,
    spec: RecurrentSpec,
    g: GraphBuilder,
    layer: int,
    x: str,
    states: list[str],
) -> tuple[str, list[str]]:
    """One LSTM layer with ``proj_size`` as a Scan: ``h = W_hr (o * tanh(c))`` fed back."""
    h0, c0 = states
    seqs, h_finals, c_finals = [], [], []
    for d in range(spec.dirs):
        p = _weights(module, layer, d)
        tag = f"l{layer}d{d}"
        # The input projection of every step at once, outside the loop: [T, B, 4H].
        xw = g.op("MatMul", [x, g.const(f"Wt_{tag}", p["weight_ih"].T)])[0]
        if spec.bias:
            xw = g.op("Add", [xw, g.const(f"b_{tag}", p["bias_ih"] + p["bias_hh"])])[0]
        index = g.const("dir", np.asarray(d, dtype=np.int64))
        h0_d = g.op("Gather", [h0, index], axis=0)[0]
        c0_d = g.op("Gather", [c0, index], axis=0)[0]
        body = _projected_cell_body(
            g,
            tag,
            g.const(f"Rt_{tag}", p["weight_hh"].T),
            g.const(f"Whr_{tag}", p["weight_hr"].T),
            spec,
        )
        attrs = {"body": body, "num_scan_inputs": 1}
        if d == 1:
            attrs |= {"scan_input_directions": [1], "scan_output_directions": [1]}
        h_t, c_t, seq = g.op("Scan", [h0_d, c0_d, xw], n_out=3, **attrs)
        axis0 = g.ints("axis", [0])
        h_finals.append(g.op("Unsqueeze", [h_t, axis0])[0])
        c_finals.append(g.op("Unsqueeze", [c_t, axis0])[0])
        seqs.append(seq)
    if spec.dirs == 1:
        return seqs[0], [h_finals[0], c_finals[0]]
    seq = g.op("Concat", seqs, axis=-1)[0]
    return seq, [g.op("Concat", h_finals, axis=0)[0], g.op("Concat", c_finals, axis=0)[0]]


def _projected_cell_body(
    g: GraphBuilder, tag: str, r_t: str, w_hr_t: str, spec: RecurrentSpec
) -> onnx.GraphProto:
    """The Scan body of one projected-LSTM step; weights are read from the outer graph."""
    body = GraphBuilder(prefix=f"{g.prefix}/{tag}_cell", _ids=g._ids)
    h_prev, c_prev, xw_t = body.name("h_prev"), body.name("c_prev"), body.name("xw_t")
    gates = body.op("Add", [xw_t, body.op("MatMul", [h_prev, r_t])[0]])[0]
    i, f, c_hat, o = body.op("Split", [gates], n_out=4, axis=-1, num_outputs=4)
    i, f, o = (body.op("Sigmoid", [t])[0] for t in (i, f, o))
    c_hat = body.op("Tanh", [c_hat])[0]
    c_new = body.op("Add", [body.op("Mul", [f, c_prev])[0], body.op("Mul", [i, c_hat])[0]])[0]
    h_full = body.op("Mul", [o, body.op("Tanh", [c_new])[0]])[0]
    h_new = body.op("MatMul", [h_full, w_hr_t])[0]
    h_seq = body.op("Identity", [h_new])[0]
    p, h = spec.proj_size, spec.hidden_size
    f32 = TensorProto.FLOAT
    return helper.make_graph(
        body.nodes,
        f"{tag}_cell",
        [
            helper.make_tensor_value_info(h_prev, f32, ["batch", p]),
            helper.make_tensor_value_info(c_prev, f32, ["batch", h]),
            helper.make_tensor_value_info(xw_t, f32, ["batch", 4 * h]),
        ],
        [
            helper.make_tensor_value_info(h_new, f32, ["batch", p]),
            helper.make_tensor_value_info(c_new, f32, ["batch", h]),
            helper.make_tensor_value_info(h_seq, f32, ["batch", p]),
        ],
    )
