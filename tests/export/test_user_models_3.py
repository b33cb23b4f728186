"""Users' models the exporter got wrong after issue 10, class by class.

1. Outputs computed from the returned state instead of the sequence: encoders that return
   ``hidden, cell`` or ``h_end[-1]``, classifiers on ``h_n[-1]``, on ``h_n.squeeze(0)``, on
   ``cat([h[-2], h[-1]])``, on the cell state, ``out[-1]`` of a time-major layer. A stream's
   meaning for such an output, at each step, is the head applied to that step's state: what
   PyTorch returns on the sequence so far. So every step (and every chunk's end) is compared with
   PyTorch run on the prefix up to it, and an output shaped like the state (``[layers, batch,
   hidden]``, batch second) comes back batch first, as every stream output does.

2. An ``nn.LSTM``/``GRU``/``RNN`` called once per time step in a Python loop (``for t in
   range(T): out, h = self.lstm(x[:, t:t+1], h)``, ``x[t].unsqueeze(0)`` time-major, ``split``,
   ``unbind``, two layers stacked in the loop, state from ``None``, from zeros or passed in):
   exported as a cell loop (one traced step in a Scan). A layer run several times otherwise, or
   an LSTM with ``proj_size`` run per step, is refused naming it, with the fix.

3. Extra per-stream inputs that are not time series (a speaker embedding, a temperature): a
   stream feeds a model only its frames and its state, so they are refused naming the argument
   and the fix, a wrapper that fixes the value (checked to export and stream here). A new runtime
   input role was not built: per-row constants in the pool, their parity and their place in the
   signature are more than a wrapper asks of the user for one conditioning value per file.

Each model is exported, then streamed step by step, in chunks and through a ``StreamPool``, and
compared with PyTorch at the float32 parity tolerance (or refused in at most three lines).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import rnnstream
from rnnstream.export import ParitySettings, export
from tests.export.streaming import Case, assert_refused_in_a_short_message, batch_time, by_name
from tests.tolerances import PARITY, assert_close

SETTINGS = ParitySettings(steps=30, chunk=4)
STEPS, BATCH, CHUNK = 11, 2, 4


class EncoderHiddenCell(nn.Module):
    """A seq2seq LSTM encoder that keeps only the last hidden and cell states: ``return hidden,
    cell`` (both ``[layers, batch, hidden]``)."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(4, 6, num_layers=2, batch_first=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, (hidden, cell) = self.lstm(x)
        return hidden, cell


class TokenEncoderHidden(nn.Module):
    """A time-major GRU encoder over token ids returning only its ``hidden``."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(12, 5)
        self.rnn = nn.GRU(5, 6)

    def forward(self, src: torch.Tensor) -> torch.Tensor:
        _, hidden = self.rnn(self.embedding(src))
        return hidden


class EncoderLastLayer(nn.Module):
    """An autoencoder's encoder: ``return h_end[-1]`` of a 2-layer LSTM with dropout."""

    def __init__(self) -> None:
        super().__init__()
        self.model = nn.LSTM(4, 6, num_layers=2, batch_first=True, dropout=0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, (h_end, _c_end) = self.model(x)
        return h_end[-1]


class SqueezedHiddenClassifier(nn.Module):
    """``self.fc(h_n.squeeze(0))`` on a one-layer LSTM."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(4, 6, batch_first=True)
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, (h_n, _) = self.lstm(x)
        return self.fc(h_n.squeeze(0))


class LastTwoLayersClassifier(nn.Module):
    """``cat([hidden[-2], hidden[-1]], dim=1)`` of a unidirectional 3-layer GRU, viewed and
    soft-maxed."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.GRU(4, 5, num_layers=3, batch_first=True)
        self.fc = nn.Linear(10, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, hidden = self.rnn(x)
        last = torch.cat([hidden[-2], hidden[-1]], dim=1).contiguous().view(x.size(0), -1)
        return torch.log_softmax(self.fc(last), dim=-1)


class CellStateClassifier(nn.Module):
    """A linear unit on the LSTM's cell state ``c_n`` (``[1, batch, 1]``: batch second)."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(4, 6, batch_first=True)
        self.linear = nn.Linear(6, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _output, (_hidden, cell) = self.lstm(x)
        return self.linear(cell)


class LastStepAndHidden(nn.Module):
    """``return out, h`` where ``out`` is ``h[-1]`` again (the last step of the top layer), with
    ``forward(x, h=None)``."""

    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(4, 6, num_layers=2, batch_first=True)

    def forward(self, x: torch.Tensor, h: torch.Tensor | None = None) -> tuple:
        out, h = self.gru(x, h)
        return out[:, -1], h


class TimeMajorLastOutput(nn.Module):
    """``self.head(out[-1])`` of a time-major LSTM, and the whole state passed in as ``hidden``."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.LSTM(4, 6)
        self.head = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor, hidden: tuple) -> tuple:
        out, hidden = self.rnn(x, hidden)
        return self.head(out[-1]), hidden

    def init_hidden(self, bsz: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros(1, bsz, 6), torch.zeros(1, bsz, 6)


class BatchFirstStepLoop(nn.Module):
    """``out, h = self.lstm(x[:, t:t+1], h)`` from ``h = None``, a head per step, ``cat``."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(4, 6, batch_first=True)
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, outs = None, []
        for t in range(x.size(1)):
            out, h = self.lstm(x[:, t : t + 1], h)
            outs.append(self.fc(out))
        return torch.cat(outs, dim=1)


class TimeMajorStepLoop(nn.Module):
    """A time-major GRU fed ``x[t].unsqueeze(0)``, ``forward(x, hidden=None) -> (y, hidden)``."""

    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(4, 6)
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor, hidden: torch.Tensor | None = None) -> tuple:
        outs = []
        for t in range(x.size(0)):
            out, hidden = self.gru(x[t].unsqueeze(0), hidden)
            outs.append(self.fc(out))
        return torch.cat(outs, dim=0), hidden


class SplitStepLoopRequiredState(nn.Module):
    """A 2-layer GRU over ``x.split(1, dim=1)`` with the state a required argument."""

    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(4, 5, num_layers=2, batch_first=True)
        self.fc = nn.Linear(5, 2)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ys = []
        for x_t in x.split(1, dim=1):
            y, h = self.gru(x_t, h)
            ys.append(self.fc(y))
        return torch.cat(ys, 1), h


class UnbindRnnFromZeros(nn.Module):
    """A ReLU ``nn.RNN`` over ``x.unbind(1)``, its state zeros made from ``x``, ``stack``."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.RNN(4, 6, nonlinearity="relu", batch_first=True)
        self.fc = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, ys = x.new_zeros(1, x.size(0), 6), []
        for x_t in x.unbind(1):
            y, h = self.rnn(x_t.unsqueeze(1), h)
            ys.append(self.fc(y.squeeze(1)))
        return torch.stack(ys, 1)


class StackedStepLoop(nn.Module):
    """An LSTM then a 2-layer GRU, both stepped in one loop, a head on each step."""

    def __init__(self) -> None:
        super().__init__()
        self.l1 = nn.LSTM(4, 6, batch_first=True)
        self.l2 = nn.GRU(6, 5, num_layers=2, batch_first=True)
        self.fc = nn.Linear(5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h1 = h2 = None
        ys = []
        for t in range(x.shape[1]):
            a, h1 = self.l1(x[:, t].unsqueeze(1), h1)
            b, h2 = self.l2(a, h2)
            ys.append(self.fc(b[:, 0]))
        return torch.stack(ys, 1)


class CausalConvThenSteppedGru(nn.Module):
    """A causal Conv1d front-end (padding trimmed), then a GRU stepped over its frames."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(4, 6, 3, padding=2)
        self.gru = nn.GRU(6, 5, batch_first=True)
        self.fc = nn.Linear(5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = self.conv(x.transpose(1, 2))[:, :, : x.size(1)].transpose(1, 2)
        h, ys = None, []
        for t in range(x.size(1)):
            y, h = self.gru(frames[:, t : t + 1], h)
            ys.append(self.fc(y))
        return torch.cat(ys, 1)


# the harness's Case (``call``: PyTorch on a prefix from the zero state), 4 features a step
_case = partial(Case, features=4)


def _first(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    return [model(x)[0]]


def _whole(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    return [model(x)]


CASES = [
    _case("encoder_returns_hidden_cell", EncoderHiddenCell, _first),
    _case("token_encoder_returns_hidden", TokenEncoderHidden, _whole, tokens=12, batch_first=False),
    _case("encoder_returns_h_end_last_layer", EncoderLastLayer, _whole),
    _case("classifier_on_squeezed_h_n", SqueezedHiddenClassifier, _whole),
    _case("classifier_on_last_two_layers", LastTwoLayersClassifier, _whole),
    _case("classifier_on_cell_state", CellStateClassifier, _whole),
    _case("last_step_and_hidden", LastStepAndHidden, _first),
    _case(
        "time_major_out_last",
        TimeMajorLastOutput,
        lambda m, x: [m(x, m.init_hidden(x.shape[1]))[0]],
        batch_first=False,
    ),
]

STEP_LOOPS = [
    _case("lstm_stepped_batch_first", BatchFirstStepLoop, _whole),
    _case("gru_stepped_time_major", TimeMajorStepLoop, _first, batch_first=False),
    _case(
        "gru_stepped_split_required_state",
        SplitStepLoopRequiredState,
        lambda m, x: [m(x, torch.zeros(2, x.shape[0], 5))[0]],
    ),
    _case("rnn_stepped_unbind_from_zeros", UnbindRnnFromZeros, _whole),
    _case("two_layers_stepped_in_one_loop", StackedStepLoop, _whole),
    _case("gru_stepped_after_a_causal_conv", CausalConvThenSteppedGru, _whole),
]


def _caller_layout(y: np.ndarray, spec: rnnstream.TensorSpec) -> np.ndarray:
    """A model-layout output as a stream returns it: batch first, then time (if any)."""
    if spec.time_axis is None:
        return np.moveaxis(y, spec.batch_axis, 0)
    return np.moveaxis(y, (spec.batch_axis, spec.time_axis), (0, 1))


def stream_like_pytorch_on_every_prefix(case: Case, tmp_path: Path) -> rnnstream.Signature:
    """Export ``case``'s model, then check each step's and each chunk's outputs against PyTorch
    run on the input up to that point, and a pool's steps against the lone stream's."""
    torch.manual_seed(sum(map(ord, case.name)))
    model = case.make().eval()
    example = case.input(seed=0, batch=BATCH, steps=STEPS) if case.example else None
    report = export(model, tmp_path / "m.onnx", example=example, parity=SETTINGS)
    sig = report.signature
    assert [o.name for o in sig.outputs] == list(case.names)
    assert report.parity is not None and report.parity.passed
    x = case.input(seed=7, batch=BATCH, steps=STEPS)
    time_axis = 1 if case.batch_first else 0

    def pytorch(end: int) -> dict[str, np.ndarray]:
        with torch.no_grad():
            ys = case.call(model, x.narrow(time_axis, 0, end))
        return {o.name: _caller_layout(y.numpy(), o) for o, y in zip(sig.outputs, ys)}

    frames = batch_time(x, case.batch_first)
    whole = pytorch(STEPS)
    loaded = rnnstream.load(report.path)
    stream, pool = loaded.stream(batch=BATCH), loaded.pool()
    rows = [pool.open() for _ in range(BATCH)]
    per_step: dict[str, list[np.ndarray]] = {o.name: [] for o in sig.outputs}
    for t in range(STEPS):
        got = by_name(stream.step(frames[:, t]), case.names)
        pooled = pool.step({row: frames[i, t] for i, row in enumerate(rows)})
        ref = pytorch(t + 1)
        for o in sig.outputs:
            per_step[o.name].append(got[o.name])
            for i, row in enumerate(rows):
                assert_close(by_name(pooled[row], case.names)[o.name], got[o.name][i])
            if o.time_axis is None:
                assert_close(got[o.name], ref[o.name], PARITY)
    stream.reset()
    chunks: dict[str, list[np.ndarray]] = {o.name: [] for o in sig.outputs}
    for start in range(0, STEPS, CHUNK):
        end = min(start + CHUNK, STEPS)
        got = by_name(stream.feed(frames[:, start:end]), case.names)
        ref = pytorch(end)
        for o in sig.outputs:
            chunks[o.name].append(got[o.name])
            if o.time_axis is None:
                assert_close(got[o.name], ref[o.name], PARITY)
    for o in sig.outputs:
        if o.time_axis is not None:
            assert_close(np.stack(per_step[o.name], axis=1), whole[o.name], PARITY)
            assert_close(np.concatenate(chunks[o.name], axis=1), whole[o.name], PARITY)
    return sig


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_output_from_the_returned_state_streams_per_step(case: Case, tmp_path: Path) -> None:
    stream_like_pytorch_on_every_prefix(case, tmp_path)


def test_state_returned_as_the_output_keeps_its_shape_batch_first(tmp_path: Path) -> None:
    """``return hidden, cell``: the output is ``hidden`` (``[2, batch, 6]`` in the file), the
    stream's step gives ``[batch, 2, 6]``; the state pairs are the usual ``h0/c0 -> hn/cn``."""
    sig = stream_like_pytorch_on_every_prefix(CASES[0], tmp_path)
    (output,) = sig.outputs
    assert output.shape == (2, "batch", 6) and output.batch_axis == 1
    assert output.time_axis is None
    assert [(s.input, s.output) for s in sig.states] == [("h0", "hn"), ("c0", "cn")]


@pytest.mark.parametrize("case", STEP_LOOPS, ids=lambda c: c.name)
def test_layer_stepped_in_a_python_loop_streams_like_pytorch(case: Case, tmp_path: Path) -> None:
    sig = stream_like_pytorch_on_every_prefix(case, tmp_path)
    assert all(v["per_step"] for v in sig.source["cells"].values())
    # each layer's state as in any export: [layers, batch, hidden], h0/c0 (<layer>_h0 for two)
    layers = [s for s in sig.states if not s.input.endswith("_ctx0")]
    assert layers and all(s.shape[1] == "batch" and s.batch_axis == 1 for s in layers)
    assert all(s.input[-2:] in ("h0", "c0") for s in layers)


@pytest.mark.parametrize(
    ("case", "precision"),
    [(STEP_LOOPS[0], "int4"), (STEP_LOOPS[0], "float16"), (STEP_LOOPS[1], "int8")],
    ids=["lstm_int4", "lstm_float16", "gru_int8"],
)
def test_a_stepped_layer_exports_at_lower_precision(
    case: Case, precision: str, tmp_path: Path
) -> None:
    torch.manual_seed(8)
    report = export(case.make().eval(), tmp_path / "m.onnx", parity=SETTINGS, precision=precision)
    assert report.parity is not None and report.parity.passed
    assert report.signature.precision == precision


class SameLayerTwice(nn.Module):
    """One GRU run forwards and over the flipped sequence: two uses, one state."""

    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(4, 6, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gru(x)[0] + self.gru(x.flip(1))[0]


class ProjectedStepLoop(nn.Module):
    """An LSTM with ``proj_size`` stepped in a loop."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(4, 6, proj_size=3, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, outs = None, []
        for t in range(x.size(1)):
            out, h = self.lstm(x[:, t : t + 1], h)
            outs.append(out)
        return torch.cat(outs, 1)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            SameLayerTwice,
            "recurrent module 'gru' runs more than once per forward (2 times over 3 steps, on "
            "inputs of 3, 3 steps): a stream carries one state per module.\nCall it once on the "
            "whole sequence",
        ),
        (
            ProjectedStepLoop,
            "'lstm' (an LSTM with proj_size) runs once per time step, which exports only for a "
            "layer without proj_size; call it once on the whole sequence",
        ),
    ],
    ids=["same_layer_twice", "proj_size_stepped"],
)
def test_layer_run_several_times_is_refused_with_the_fix(
    make: Callable[[], nn.Module], message: str, tmp_path: Path
) -> None:
    torch.manual_seed(3)
    assert_refused_in_a_short_message(make(), tmp_path / "m.onnx", message, None, SETTINGS)


class SpeakerConditioned(nn.Module):
    """A speaker embedding repeated over time and concatenated to each frame:
    ``forward(x, spk_emb, hidden=None) -> (y, hidden)``."""

    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(4 + 3, 6, batch_first=True)
        self.fc = nn.Linear(6, 2)

    def forward(
        self, x: torch.Tensor, spk_emb: torch.Tensor, hidden: torch.Tensor | None = None
    ) -> tuple:
        cond = spk_emb.unsqueeze(1).expand(-1, x.size(1), -1)
        out, hidden = self.gru(torch.cat([x, cond], dim=-1), hidden)
        return self.fc(out), hidden


class WithSpeaker(nn.Module):
    """The fix the refusal asks for: one speaker's embedding kept as a buffer (one export per
    speaker), expanded to the batch."""

    def __init__(self, model: nn.Module, spk_emb: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("spk_emb", spk_emb)

    def forward(self, x: torch.Tensor, hidden: torch.Tensor | None = None) -> tuple:
        return self.model(x, self.spk_emb.expand(x.size(0), -1), hidden)


class SampledWithTemperature(nn.Module):
    """``forward(x, hidden, temperature: float)``: softmax of the logits over a temperature."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(4, 6, batch_first=True)
        self.fc = nn.Linear(6, 5)

    def forward(self, x: torch.Tensor, hidden: tuple, temperature: float) -> tuple:
        out, hidden = self.lstm(x, hidden)
        return torch.softmax(self.fc(out) / temperature, dim=-1), hidden


class TemperatureTensor(nn.Module):
    """``forward(x, hidden, temperature)`` with no annotations: a tensor temperature."""

    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(4, 6, batch_first=True)
        self.fc = nn.Linear(6, 5)

    def forward(self, x, hidden, temperature):  # untyped, as users write it
        out, hidden = self.gru(x, hidden)
        return self.fc(out) / temperature, hidden


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            SpeakerConditioned,
            "SpeakerConditioned.forward requires 'spk_emb' besides the input; the exporter "
            "passes recurrent state there, and the model fails on its layers' zero state",
        ),
        (
            SampledWithTemperature,
            "SampledWithTemperature.forward requires 'temperature' (float) besides the input: "
            "not recurrent state, and a stream feeds the model only its input and state.\nFix "
            "'temperature' in a wrapper module whose forward(x, ...) calls the model with it "
            "(one export per value), or give 'temperature' a default.",
        ),
        (
            TemperatureTensor,
            "If one of 'hidden', 'temperature' is not recurrent state, fix its value in a "
            "wrapper module whose forward takes only the input",
        ),
    ],
    ids=["speaker_embedding", "float_temperature", "tensor_temperature"],
)
def test_conditioning_argument_is_refused_naming_it_and_the_wrapper(
    make: Callable[[], nn.Module], message: str, tmp_path: Path
) -> None:
    torch.manual_seed(4)
    assert_refused_in_a_short_message(make(), tmp_path / "m.onnx", message, None, SETTINGS)


def test_the_wrapper_that_fixes_the_conditioning_streams_like_pytorch(tmp_path: Path) -> None:
    speaker = torch.randn(1, 3, generator=torch.Generator().manual_seed(9))
    case = _case(
        "speaker_fixed_by_a_wrapper",
        lambda: WithSpeaker(SpeakerConditioned(), speaker),
        _first,
        example=True,  # the GRU's input size (frame + embedding) is not the frame's
    )
    sig = stream_like_pytorch_on_every_prefix(case, tmp_path)
    assert [s.input for s in sig.states] == ["h0"]
