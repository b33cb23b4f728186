"""Candidate one-step graphs against today's exports, side by side (issues 12 and 17).

    python -m rnnstream.bench.step_graphs [--cells lstm,gru,rnn_tanh] [--steps N] [--rounds N]
                                          [--without-step-path] [--json FILE]

For each cell on the reference shape (2 layers, input 64, hidden 256, head 256->64, batch 1, one
onnxruntime thread), a seeded ``RecurrentNet`` is exported by rnnstream at float32 and int8 (with
parity, as ``rnnstream export`` does), and the same weights are built by hand into *lean* step
graphs (per-layer state tensors, no edge transposes, no squeezes): per layer one projection over
``concat[x, h]`` with ``[W; R]`` stacked (one pass over the weights) and the gate arithmetic,
with the projections as

* ``float32``: ``Gemm``;
* ``dqmm``: com.microsoft ``DynamicQuantizeMatMul`` (7-bit int8 weights per output column; the
  activation quantised once per layer, inside the operator);
* ``mmint``: ``DynamicQuantizeLinear`` + ``MatMulInteger`` + scale, spelled out;
* ``nbits8`` / ``nbits4``: weight-only com.microsoft ``MatMulNBits`` (block 32,
  ``accuracy_level`` 4: int8 activations inside the kernel);

or ``native``: onnxruntime's own ``LSTM`` / ``GRU`` / ``RNN`` operator per layer, float32, and
the head as one ``Gemm`` (what a float32 step branch keeping the operators could at best be).

Every variant is timed with the same bare ``session.run`` loop carrying its state (rounds
interleaved, medians and p99 per step). The exports are timed on two sessions: the general one
(free ``batch`` and ``time`` dims: what a pool's tick and chunks run) and one with those dims
pinned to 1 (``add_free_dimension_override_by_name``: what a stream's steps run once the runtime
pins them; onnxruntime then folds the step path's ``If`` and inlines its step branch), and also
through ``Stream.step`` and on chunks of 64 frames (µs per frame). The lean graphs have fixed
shapes (nothing to pin): their one time is in the pinned column. The int8 exports are what
``rnnstream export --quantize int8`` writes: ``DynamicQuantizeLSTM`` for LSTM layers, the step
path of :mod:`rnnstream.export.step_path` for GRU and RNN models (float32 RNN models have one
too, with float cells; ``--without-step-path`` adds each file that has a step path with it
removed: what the step path gains). Each lean graph is checked against PyTorch over 64 steps
(max abs error of ``y``). Shared machines are noisy: read the ratios within one run, not the
absolute numbers.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper

from rnnstream.bench.latency import measure
from rnnstream.export import ParitySettings, export
from rnnstream.export.graph_walk import MS_DOMAIN
from rnnstream.export.int4 import pack_nbits
from rnnstream.export.layers import GraphBuilder
from rnnstream.export.lean_cells import quantize_columns
from rnnstream.export.step_path import STEP_PATH_NODE, without_step_path
from rnnstream.models import RecurrentNet, RecurrentNetConfig
from rnnstream.runtime import load
from rnnstream.runtime.model import session_options

__all__ = ["LEAN_KINDS", "lean_step_graph", "main", "step_lean"]

LEAN_KINDS = ("float32", "native", "dqmm", "mmint", "nbits8", "nbits4")
REFERENCE = {"num_layers": 2, "input_size": 64, "hidden_size": 256, "output_size": 64}
NBITS_BLOCK = 32


def _linear(g: GraphBuilder, a: str, w: np.ndarray, bias: np.ndarray, kind: str) -> str:
    """``a @ w.T + bias`` for ``w`` [N, K], its weights stored as ``kind`` says."""
    n, k = w.shape
    if kind in ("float32", "native"):
        return g.op("Gemm", [a, g.const("w", w.T), g.const("b", bias)])[0]
    if kind == "dqmm":
        q, scale = quantize_columns(w.T)
        zero = g.const("wzp", np.zeros(n, np.int8))
        ins = [a, g.const("wq", q), g.const("ws", scale), zero, g.const("b", bias)]
        return g.op("DynamicQuantizeMatMul", ins, domain=MS_DOMAIN)[0]
    if kind == "mmint":
        q, scale = quantize_columns(w.T)
        aq, a_scale, a_zero = g.op("DynamicQuantizeLinear", [a], n_out=3)
        acc = g.op("MatMulInteger", [aq, g.const("wq", q), a_zero])[0]
        acc = g.op("Cast", [acc], to=TensorProto.FLOAT)[0]
        scaled = g.op("Mul", [acc, g.op("Mul", [a_scale, g.const("ws", scale)])[0]])[0]
        return g.op("Add", [scaled, g.const("b", bias)])[0]
    bits = {"nbits8": 8, "nbits4": 4}[kind]
    packed, scales = pack_nbits(w, bits, NBITS_BLOCK)
    attrs = {"K": k, "N": n, "bits": bits, "block_size": NBITS_BLOCK, "accuracy_level": 4}
    ins = [a, g.const("wq", packed), g.const("ws", scales)]
    y = g.op("MatMulNBits", ins, domain=MS_DOMAIN, **attrs)[0]
    return g.op("Add", [y, g.const("b", bias)])[0]


def _layer_weights(rnn: torch.nn.RNNBase, layer: int) -> tuple[np.ndarray, ...]:
    return tuple(
        getattr(rnn, f"{kind}_l{layer}").detach().numpy().astype(np.float32)
        for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    )


def _native_cell(g: GraphBuilder, cell: str, x: str, states: list[str], weights) -> list[str]:
    """One layer's step as onnxruntime's own operator, float32: the new states."""
    w, r, b_ih, b_hh = weights
    hidden = r.shape[1]
    blocks = {"lstm": [0, 3, 1, 2], "gru": [1, 0, 2]}.get(cell, [0])  # torch -> ONNX gate order

    def onnx_order(value: np.ndarray) -> np.ndarray:
        return np.concatenate([value[k * hidden : (k + 1) * hidden] for k in blocks])[None]

    w, r, bias = (
        onnx_order(w),
        onnx_order(r),
        np.concatenate([onnx_order(b_ih), onnx_order(b_hh)], 1),
    )
    attrs = {"hidden_size": hidden}
    if cell == "gru":
        attrs["linear_before_reset"] = 1
    if cell.startswith("rnn_"):
        attrs["activations"] = ["Relu" if cell == "rnn_relu" else "Tanh"]
    op = {"lstm": "LSTM", "gru": "GRU"}.get(cell, "RNN")
    unit = g.ints("unit", [1, 1, -1])
    ins = [g.op("Reshape", [x, unit])[0], g.const("w", w), g.const("r", r), g.const("b", bias), ""]
    ins += [g.op("Reshape", [s, unit])[0] for s in states]
    outs = g.op(op, ins, n_out=len(states) + 1, **attrs)[1:]
    flat = g.ints("flat", [1, hidden])
    return [g.op("Reshape", [out, flat])[0] for out in outs]


def _lean_cell(g: GraphBuilder, cell: str, x: str, states: list[str], weights, kind: str):
    """One layer's step: the new states (``[h]`` or ``[h, c]``)."""
    if kind == "native":
        return _native_cell(g, cell, x, states, weights)
    w, r, b_ih, b_hh = weights
    hidden = r.shape[1]
    xh = g.op("Concat", [x, states[0]], axis=1)[0]
    if cell == "gru":  # rows: r|z (x and h summed), n from x, n from h (reset applies to it)
        fin = w.shape[1]
        big = np.zeros((4 * hidden, fin + hidden), np.float32)
        big[: 2 * hidden, :fin], big[: 2 * hidden, fin:] = w[: 2 * hidden], r[: 2 * hidden]
        big[2 * hidden : 3 * hidden, :fin] = w[2 * hidden :]
        big[3 * hidden :, fin:] = r[2 * hidden :]
        bias = np.concatenate([(b_ih + b_hh)[: 2 * hidden], b_ih[2 * hidden :], b_hh[2 * hidden :]])
        pre = _linear(g, xh, big, bias, kind)
        sizes = g.ints("sizes", [2 * hidden, hidden, hidden])
        rz, xn, hn = g.op("Split", [pre, sizes], n_out=3, axis=1)
        reset, update = g.op("Split", [g.op("Sigmoid", [rz])[0]], n_out=2, axis=1, num_outputs=2)
        n = g.op("Tanh", [g.op("Add", [xn, g.op("Mul", [reset, hn])[0]])[0]])[0]
        delta = g.op("Mul", [update, g.op("Sub", [states[0], n])[0]])[0]
        return [g.op("Add", [n, delta])[0]]  # h' = (1 - z) n + z h
    pre = _linear(g, xh, np.concatenate([w, r], axis=1), b_ih + b_hh, kind)
    if cell.startswith("rnn_"):
        return [g.op("Relu" if cell == "rnn_relu" else "Tanh", [pre])[0]]
    i, f, c_hat, o = g.op("Split", [pre], n_out=4, axis=1, num_outputs=4)
    i, f, o = (g.op("Sigmoid", [t])[0] for t in (i, f, o))
    c_hat = g.op("Tanh", [c_hat])[0]
    c_new = g.op("Add", [g.op("Mul", [f, states[1]])[0], g.op("Mul", [i, c_hat])[0]])[0]
    return [g.op("Mul", [o, g.op("Tanh", [c_new])[0]])[0], c_new]


def lean_step_graph(net: RecurrentNet, kind: str) -> onnx.ModelProto:
    """One step of ``net`` (no embedding, batch 1): ``x`` [1, I] and per-layer states in,
    ``y`` [1, O] and the new states out, the projections stored as ``kind``."""
    config, g = net.config, GraphBuilder(prefix="lean")
    f32 = TensorProto.FLOAT
    inputs = [helper.make_tensor_value_info("x", f32, [1, config.input_size])]
    outputs = []
    names = ["h", "c"] if config.cell == "lstm" else ["h"]
    x = "x"
    for layer in range(config.num_layers):
        states = [f"{n}{layer}" for n in names]
        inputs += [helper.make_tensor_value_info(s, f32, [1, config.hidden_size]) for s in states]
        new = _lean_cell(g, config.cell, x, states, _layer_weights(net.rnn, layer), kind)
        for state, value in zip(states, new):
            g.op("Identity", [value], out=[f"{state}_out"])
            outputs.append(helper.make_tensor_value_info(f"{state}_out", f32, None))
        x = new[0]
    head = net.head
    w, b = (p.detach().numpy().astype(np.float32) for p in (head.weight, head.bias))
    g.op("Identity", [_linear(g, x, w, b, kind)], out=["y"])
    outputs.insert(0, helper.make_tensor_value_info("y", f32, [1, config.output_size]))
    graph = helper.make_graph(g.nodes, f"lean_{kind}", inputs, outputs, g.initializers)
    opsets = [helper.make_opsetid("", 18), helper.make_opsetid(MS_DOMAIN, 1)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=9)


def _session(model: bytes | str, pinned: bool = False) -> ort.InferenceSession:
    """A session with the options every rnnstream stream uses (one thread, sequential); with
    ``pinned``, the exports' free ``batch`` and ``time`` dims fixed to 1 (a stream's steps)."""
    options = session_options(1)
    if pinned:
        options.add_free_dimension_override_by_name("batch", 1)
        options.add_free_dimension_override_by_name("time", 1)
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def _stepper(session: ort.InferenceSession, feeds: dict[str, np.ndarray]) -> Callable[[], None]:
    """One ``session.run`` per call, carrying each ``*_out``/``*n`` output into its input."""
    outs = [o.name for o in session.get_outputs()]
    carry = [(i, outs.index(o)) for i, o in _state_pairs(session)]

    def step() -> None:
        results = session.run(outs, feeds)
        for name, index in carry:
            feeds[name] = results[index]

    return step


def _state_pairs(session: ort.InferenceSession) -> list[tuple[str, str]]:
    outs = {o.name for o in session.get_outputs()}
    pairs = []
    for i in session.get_inputs():
        for out in (f"{i.name}_out", i.name.replace("0", "n", 1)):
            if out in outs and out != i.name:
                pairs.append((i.name, out))
                break
    return pairs


def _exported_feeds(session: ort.InferenceSession, x: np.ndarray) -> dict[str, np.ndarray]:
    feeds = {}
    for i in session.get_inputs():
        if i.name == "x":
            feeds[i.name] = x
        else:
            shape = [1 if not isinstance(d, int) else d for d in i.shape]
            feeds[i.name] = np.zeros(shape, np.float32)
    return feeds


def step_lean(session: ort.InferenceSession, xs: np.ndarray) -> np.ndarray:
    """``y`` of a lean step graph for each frame of ``xs`` [T, I], from zero state: [T, O]."""
    feeds = {i.name: np.zeros(i.shape, np.float32) for i in session.get_inputs()}
    outs = [o.name for o in session.get_outputs()]
    pairs = _state_pairs(session)
    ys = []
    for frame in xs:
        feeds["x"] = frame[None]
        results = dict(zip(outs, session.run(outs, feeds)))
        ys.append(results["y"][0])
        feeds |= {i: results[o] for i, o in pairs}
    return np.stack(ys)


def _lean_error(session: ort.InferenceSession, net: RecurrentNet, steps: int) -> float:
    """Max abs error of ``y`` against PyTorch over ``steps`` seeded steps from zero state."""
    shape = (steps, net.config.input_size)
    xs = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(xs)[None])[0].numpy()[0]
    return float(np.abs(step_lean(session, xs) - expected).max())


def _export_methods(name: str, model: bytes | str, x1: np.ndarray, x64: np.ndarray) -> dict:
    """The timed calls of one exported file: a step on the general and on the pinned session,
    ``Stream.step``, a 64-frame chunk."""
    general, pinned = _session(model), _session(model, pinned=True)
    return {
        f"{name}|step": (_stepper(general, _exported_feeds(general, x1)), 1),
        f"{name}|pinned": (_stepper(pinned, _exported_feeds(pinned, x1)), 1),
        f"{name}|stream": (partial(load(model).stream().step, x1[0, 0]), 1),
        f"{name}|chunk": (_stepper(general, _exported_feeds(general, x64)), 64),
    }


def run(cells: list[str], steps: int, rounds: int, without_step: bool = False) -> dict:
    """Every cell x variant: file size, step median/p99 (general and pinned session),
    ``Stream.step``, chunk µs/frame, error vs PyTorch."""
    rows: dict[str, dict] = {}
    methods = {}
    x1 = np.random.default_rng(0).standard_normal((1, 1, 64)).astype(np.float32)
    x64 = np.random.default_rng(0).standard_normal((1, 64, 64)).astype(np.float32)
    tmp = Path(tempfile.mkdtemp(prefix="rnnstream-step-graphs-"))
    for cell in cells:
        torch.manual_seed(0)
        net = RecurrentNet(RecurrentNetConfig(cell=cell, **REFERENCE)).eval()
        for precision in ("float32", "int8"):
            path = tmp / f"{cell}-{precision}.onnx"
            export(net, path, parity=ParitySettings(steps=64), precision=precision)
            name = f"{cell} export {precision}"
            rows[name] = {"size_bytes": path.stat().st_size}
            methods |= _export_methods(name, str(path), x1, x64)
            proto = onnx.load(path)
            if without_step and any(n.name == STEP_PATH_NODE for n in proto.graph.node):
                data = without_step_path(proto).SerializeToString()
                rows[f"{name} without step path"] = {"size_bytes": len(data)}
                methods |= _export_methods(f"{name} without step path", data, x1, x64)
        for kind in LEAN_KINDS:
            proto = lean_step_graph(net, kind).SerializeToString()
            session = _session(proto)
            name = f"{cell} lean {kind}"
            rows[name] = {"size_bytes": len(proto), "max_abs_error": _lean_error(session, net, 64)}
            feeds = {i.name: np.zeros(i.shape, np.float32) for i in session.get_inputs()}
            feeds["x"] = x1[0]
            methods[f"{name}|pinned"] = (_stepper(session, feeds), 1)
    for key, stats in measure(methods, steps, rounds).items():
        name, what = key.split("|")
        rows[name][f"{what}_median_us"] = round(stats["median_us"], 2)
        rows[name][f"{what}_p99_us"] = round(stats["p99_us"], 2)
    return {"machine": {"onnxruntime": ort.__version__, "torch": torch.__version__}, "rows": rows}


def table(report: dict) -> str:
    """The rows as a Markdown table, each time also as a ratio to its cell's float32 export's
    (``step``: the general session, a pool's tick; ``pinned``: a stream's step session)."""
    lines = [
        "| variant | size KB | step µs (p99) | vs f32 | pinned µs (p99) | vs f32 pinned "
        "| Stream.step µs | vs f32 | chunk µs/frame | max abs err |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = report["rows"]
    for name, row in rows.items():
        base = rows[f"{name.split()[0]} export float32"]
        cells = [name, f"{row['size_bytes'] / 1024:.0f}"]
        for what in ("step", "pinned", "stream"):
            if f"{what}_median_us" not in row:
                cells += ["", ""]
                continue
            median = row[f"{what}_median_us"]
            p99 = f" ({row[f'{what}_p99_us']:.0f})" if what != "stream" else ""
            cells += [f"{median:.1f}{p99}", f"{base[f'{what}_median_us'] / median:.2f}x"]
        cells.append(f"{row['chunk_median_us']:.1f}" if "chunk_median_us" in row else "")
        cells.append(f"{row['max_abs_error']:.1e}" if "max_abs_error" in row else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", default="lstm,gru,rnn_tanh")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--without-step-path", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    report = run(args.cells.split(","), args.steps, args.rounds, args.without_step_path)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    print(table(report))


if __name__ == "__main__":
    main()
