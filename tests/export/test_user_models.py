"""Recurrent models written the ways PyTorch tutorials and research code write them.

Each is exported as it is (state passed as forward arguments, several heads, the state returned
next to them), then streamed step by step and in chunks by the runtime and compared with PyTorch
called from the zero state; or it is refused with its own one-sentence message.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from tests.export.streaming import (
    USER_PARITY,
    Case,
    assert_refused_in_a_short_message,
    export_and_stream_like_pytorch,
)


class RNNModel(nn.Module):
    """The word-level LM of PyTorch's examples: Embedding, dropout, time-major LSTM or GRU,
    decoder, its ``[T * B, ntoken]`` log-softmax flattened as the example writes it."""

    def __init__(self, rnn_type: str, ntoken: int = 17, nhid: int = 8, tie: bool = False) -> None:
        super().__init__()
        self.drop = nn.Dropout(0.5)
        self.encoder = nn.Embedding(ntoken, nhid)
        self.rnn = getattr(nn, rnn_type)(nhid, nhid, 2, dropout=0.5)
        self.decoder = nn.Linear(nhid, ntoken)
        if tie:
            self.decoder.weight = self.encoder.weight
        self.rnn_type, self.nhid, self.nlayers, self.ntoken = rnn_type, nhid, 2, ntoken

    def forward(self, input: torch.Tensor, hidden: object) -> tuple[torch.Tensor, object]:
        emb = self.drop(self.encoder(input))
        output, hidden = self.rnn(emb, hidden)
        decoded = self.decoder(self.drop(output))
        decoded = decoded.view(-1, self.ntoken)
        return F.log_softmax(decoded, dim=1), hidden

    def init_hidden(self, bsz: int) -> object:
        weight = next(self.parameters())
        if self.rnn_type == "LSTM":
            return (
                weight.new_zeros(self.nlayers, bsz, self.nhid),
                weight.new_zeros(self.nlayers, bsz, self.nhid),
            )
        return weight.new_zeros(self.nlayers, bsz, self.nhid)


class LastHiddenClassifier(nn.Module):
    """A sequence classifier on ``h_n[-1]`` (one score vector per sequence, updated each step)."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(5, 7, num_layers=2, batch_first=True)
        self.fc = nn.Linear(7, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, (h_n, _) = self.lstm(x)
        return self.fc(h_n[-1])


class LastOutputClassifier(nn.Module):
    """A classifier on ``output[:, -1, :]``, its zero state built from ``x.size(0)``."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden_dim, self.layer_dim = 6, 2
        self.gru = nn.GRU(4, 6, 2, batch_first=True)
        self.fc = nn.Linear(6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h0 = torch.zeros(self.layer_dim, x.size(0), self.hidden_dim).requires_grad_()
        out, _ = self.gru(x, h0.detach())
        return self.fc(out[:, -1, :])


class ActorCritic(nn.Module):
    """A recurrent RL policy: ``forward(obs, (h, c)) -> mu, log_std, value, (h, c)``."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 8), nn.Tanh())
        self.lstm = nn.LSTM(8, 8, batch_first=True)
        self.mu = nn.Linear(8, 2)
        self.log_std = nn.Linear(8, 2)
        self.value = nn.Linear(8, 1)

    def forward(
        self, obs: torch.Tensor, hidden: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, ...]:
        out, hidden = self.lstm(self.body(obs), hidden)
        log_std = self.log_std(out).clamp(-5.0, 2.0)
        return torch.tanh(self.mu(out)), log_std, self.value(out), hidden


class StackedGRUs(nn.Module):
    """Separate GRU modules with LayerNorm and residuals; ``forward(x, hiddens)`` takes a list."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(3, 6)
        self.grus = nn.ModuleList(nn.GRU(6, 6, batch_first=True) for _ in range(3))
        self.norms = nn.ModuleList(nn.LayerNorm(6) for _ in range(3))
        self.out = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor, hiddens: list[torch.Tensor]) -> tuple[torch.Tensor, list]:
        y, new = self.inp(x), []
        for gru, norm, h in zip(self.grus, self.norms, hiddens):
            z, h = gru(norm(y), h)
            y = y + z
            new.append(h)
        return self.out(y), new

    def init_hidden(self, bsz: int) -> list[torch.Tensor]:
        return [torch.zeros(1, bsz, 6) for _ in self.grus]


class DropoutGRU(nn.Module):
    """A 3-layer GRU with dropout between layers (off in eval), optional ``hidden=None``."""

    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(4, 5, num_layers=3, dropout=0.3, batch_first=True)
        self.head = nn.Linear(5, 4)

    def forward(self, x: torch.Tensor, hidden: torch.Tensor | None = None) -> tuple:
        out, hidden = self.gru(x, hidden)
        return self.head(out), hidden


class SeparateHC(nn.Module):
    """``forward(x, h, c)``: the LSTM's two states as two arguments, returned as three."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(4, 6, batch_first=True)
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple:
        out, (h, c) = self.lstm(x, (h, c))
        return self.head(out), h, c


def repackage_hidden(h: object) -> object:
    """Wraps hidden states in new Tensors, to detach them from their history."""
    if isinstance(h, torch.Tensor):
        return h.detach()
    return tuple(repackage_hidden(v) for v in h)


class DictState(nn.Module):
    """``forward(obs, state)`` with a dict over two recurrent modules, repackaged, indexed."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.LSTM(3, 5, batch_first=True)
        self.decoder = nn.GRU(5, 4, batch_first=True)
        self.head = nn.Linear(4, 3)

    def forward(self, obs: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
        state = {k: repackage_hidden(v) for k, v in state.items()}
        enc, enc_state = self.encoder(obs, (state["enc"][0], state["enc"][1].contiguous()))
        dec, dec_state = self.decoder(enc, state["dec"])
        return self.head(dec), {"enc": enc_state, "dec": dec_state}

    def init_hidden(self, bsz: int) -> dict:
        return {
            "enc": (torch.zeros(1, bsz, 5), torch.zeros(1, bsz, 5)),
            "dec": torch.zeros(1, bsz, 4),
        }


class TupleStateNoHelper(nn.Module):
    """``forward(x, state)`` with a tuple over two GRUs and no ``init_hidden``: guessed."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.GRU(3, 4, batch_first=True)
        self.second = nn.GRU(4, 4, batch_first=True)

    def forward(self, x: torch.Tensor, state: tuple) -> tuple:
        h1, h2 = state
        y, h1 = self.first(x, h1)
        y, h2 = self.second(torch.relu(y), h2)
        return y, (h1, h2)


class Tagger(nn.Module):
    """A bidirectional-free sequence tagger: per-step logits and an auxiliary score."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(11, 6)
        self.lstm = nn.LSTM(6, 6, batch_first=True)
        self.tags = nn.Linear(6, 4)
        self.aux = nn.Linear(6, 1)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out, _ = self.lstm(self.embed(tokens))
        return self.tags(out), torch.sigmoid(self.aux(out)).squeeze(-1)


class FlatHeadAndValue(nn.Module):
    """Batch-first logits flattened with ``reshape(B * T, V)`` next to a per-step value head."""

    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(4, 6, batch_first=True)
        self.logits = nn.Linear(6, 5)
        self.value = nn.Linear(6, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out, _ = self.gru(x)
        batch, steps, _ = out.shape
        logits = self.logits(out).reshape(batch * steps, -1)
        return F.log_softmax(logits, dim=-1), self.value(out)


class TransposedFlat(nn.Module):
    """A time-major LSTM whose output is made batch-major, then ``flatten(0, 1)``."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(3, 5)
        self.out = nn.Linear(5, 4)

    def forward(self, x: torch.Tensor, hidden: tuple | None = None) -> tuple:
        out, hidden = self.lstm(x, hidden)
        return self.out(out.transpose(0, 1).flatten(0, 1)), hidden


class PackedClassifier(nn.Module):
    """A text classifier that packs its padded batch when given ``lengths`` (optional), with the
    ``nn.utils.rnn`` helpers, on the last layer's ``h_n``."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(13, 6, padding_idx=0)
        self.rnn = nn.LSTM(6, 5, num_layers=2, batch_first=True)
        self.fc = nn.Linear(5, 3)

    def forward(self, text: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        embedded = self.embedding(text)
        if lengths is not None:
            embedded = nn.utils.rnn.pack_padded_sequence(
                embedded, lengths.cpu(), batch_first=True, enforce_sorted=False
            )
        output, (hidden, _cell) = self.rnn(embedded)
        if lengths is not None:
            output, _ = nn.utils.rnn.pad_packed_sequence(output, batch_first=True)
        return self.fc(hidden[-1])


class TimeSequencePrediction(nn.Module):
    """PyTorch's time-sequence-prediction example: two LSTMCells looped over ``input.split(1,
    dim=1)`` (input ``[batch, time]``), then ``future`` steps fed back (none when streaming)."""

    def __init__(self, future: int = 0) -> None:
        super().__init__()
        self.lstm1 = nn.LSTMCell(1, 9)
        self.lstm2 = nn.LSTMCell(9, 9)
        self.linear = nn.Linear(9, 1)
        self.default_future = future

    def forward(self, input: torch.Tensor, future: int | None = None) -> torch.Tensor:
        future = self.default_future if future is None else future
        outputs = []
        h_t = torch.zeros(input.size(0), 9, dtype=torch.float)
        c_t = torch.zeros(input.size(0), 9, dtype=torch.float)
        h_t2 = torch.zeros(input.size(0), 9, dtype=torch.float)
        c_t2 = torch.zeros(input.size(0), 9, dtype=torch.float)
        for input_t in input.split(1, dim=1):
            h_t, c_t = self.lstm1(input_t, (h_t, c_t))
            h_t2, c_t2 = self.lstm2(h_t, (h_t2, c_t2))
            output = self.linear(h_t2)
            outputs += [output]
        for _ in range(future):  # if we should predict the future
            h_t, c_t = self.lstm1(output, (h_t, c_t))
            h_t2, c_t2 = self.lstm2(h_t, (h_t2, c_t2))
            output = self.linear(h_t2)
            outputs += [output]
        return torch.cat(outputs, dim=1)


class CellLoopHiddenArgument(nn.Module):
    """``forward(x, h)`` looping a GRUCell over ``x.unbind(1)``, returning outputs and ``h``."""

    def __init__(self) -> None:
        super().__init__()
        self.cell = nn.GRUCell(3, 5)
        self.out = nn.Linear(5, 2)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ys = []
        for x_t in x.unbind(1):
            h = self.cell(x_t, h)
            ys.append(self.out(h))
        return torch.stack(ys, 1), h


class TimeMajorCellLoopTuple(nn.Module):
    """A time-major LSTMCell loop taking ``(h, c)`` with an ``init_hidden`` helper."""

    def __init__(self) -> None:
        super().__init__()
        self.cell = nn.LSTMCell(3, 5)
        self.batch_first = False

    def forward(self, x: torch.Tensor, hidden: tuple) -> tuple[torch.Tensor, tuple]:
        h, c = hidden
        ys = []
        for t in range(x.size(0)):
            h, c = self.cell(x[t], (h, c))
            ys.append(h)
        return torch.stack(ys), (h, c)

    def init_hidden(self, bsz: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros(bsz, 5), torch.zeros(bsz, 5)


def init_lstm_state(layers: int, batch: int, hidden: int, device: torch.device) -> tuple:
    """A free ``init_hidden`` helper, as training scripts often keep next to the model."""
    zeros = torch.zeros(layers, batch, hidden, device=device)
    return zeros, zeros.clone()


class FreeInitHidden(nn.Module):
    """``forward(x, hidden=None)`` building its zero state with a free function on x.device."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(4, 6, num_layers=2)
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor, hidden: tuple | None = None) -> tuple:
        if hidden is None:
            hidden = init_lstm_state(2, x.size(1), 6, x.device)
        out, hidden = self.lstm(x, hidden)
        return self.head(out), hidden


def _zeros_lstm(layers: int, hidden: int) -> Callable[[int], tuple]:
    return lambda bsz: (torch.zeros(layers, bsz, hidden), torch.zeros(layers, bsz, hidden))


def _lm_call(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    steps, batch = x.shape
    return [model(x, model.init_hidden(batch))[0].view(steps, batch, -1)]


def _flat_and_value_call(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    logits, value = model(x)
    return [logits.view(x.shape[0], x.shape[1], -1), value]


CASES = [
    *(
        Case(
            f"word_lm_{kind}_{'tied' if tie else 'untied'}",
            (lambda k=kind, t=tie: RNNModel(k, tie=t)),
            _lm_call,
            tokens=17,
            batch_first=False,
        )
        # both state kinds (LSTM's (h, c) tuple, GRU's one tensor), tied and untied; the RNN_TANH
        # and RNN_RELU variants differ from GRU only in the recurrent operator, whose export
        # test_matrix proves for every cell
        for kind, tie in [("LSTM", True), ("GRU", False)]
    ),
    Case("classifier_h_n_last", LastHiddenClassifier, lambda m, x: [m(x)], features=5),
    Case("classifier_output_last", LastOutputClassifier, lambda m, x: [m(x)], features=4),
    Case(
        "actor_critic_three_heads",
        ActorCritic,
        lambda m, x: list(m(x, _zeros_lstm(1, 8)(x.shape[0]))[:3]),
        names=("y0", "y1", "y2"),
        features=6,
    ),
    Case(
        "stacked_grus_layernorm_residual",
        StackedGRUs,
        lambda m, x: [m(x, m.init_hidden(x.shape[0]))[0]],
        features=3,
    ),
    Case("gru_interlayer_dropout_optional_hidden", DropoutGRU, lambda m, x: [m(x)[0]], features=4),
    Case(
        "forward_x_h_c",
        SeparateHC,
        lambda m, x: [m(x, *_zeros_lstm(1, 6)(x.shape[0]))[0]],
        features=4,
    ),
    Case(
        "dict_state_repackaged",
        DictState,
        lambda m, x: [m(x, m.init_hidden(x.shape[0]))[0]],
        features=3,
    ),
    Case(
        "tuple_state_without_init_hidden",
        TupleStateNoHelper,
        lambda m, x: [m(x, (torch.zeros(1, x.shape[0], 4), torch.zeros(1, x.shape[0], 4)))[0]],
        features=3,
    ),
    Case("tagger_logits_and_aux_score", Tagger, lambda m, x: list(m(x)), ("y0", "y1"), tokens=11),
    Case(
        "flattened_batch_first_with_value_head",
        FlatHeadAndValue,
        _flat_and_value_call,
        ("y0", "y1"),
        features=4,
    ),
    Case(
        "flattened_after_transpose_time_major",
        TransposedFlat,
        lambda m, x: [m(x)[0].view(x.shape[1], x.shape[0], -1)],
        features=3,
        batch_first=False,
    ),
    Case(
        "packed_classifier_optional_lengths",
        PackedClassifier,
        lambda m, x: [m(x, torch.full((x.shape[0],), x.shape[1]))],
        tokens=13,
    ),
    Case(
        "lstmcell_loop_time_sequence_prediction",
        TimeSequencePrediction,
        lambda m, x: [m(x)],
        features=None,
        example=True,
    ),
    Case(
        "gru_cell_loop_hidden_argument",
        CellLoopHiddenArgument,
        lambda m, x: [m(x, torch.zeros(x.shape[0], 5))[0]],
        features=3,
    ),
    Case(
        "lstm_cell_loop_time_major_tuple_init_hidden",
        TimeMajorCellLoopTuple,
        lambda m, x: [m(x, m.init_hidden(x.shape[1]))[0]],
        features=3,
        batch_first=False,
    ),
    Case(
        "free_init_hidden_on_device",
        FreeInitHidden,
        lambda m, x: [m(x)[0]],
        features=4,
        batch_first=False,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_user_model_exports_and_streams_like_pytorch(case: Case, tmp_path: Path) -> None:
    export_and_stream_like_pytorch(case, tmp_path)


class PinnedTime(nn.Module):
    """MNIST rows as time steps, with the time axis written into the code."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(28, 8, batch_first=True)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x.reshape(-1, 28, 28))
        return self.fc(out[:, -1])


class PinnedBatch(nn.Module):
    """The batch size written into the code."""

    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(3, 4, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gru(x.view(2, -1, 3))[0]


class NotStateArgument(nn.Module):
    """``forward(x, temperature)``: a required argument that is not recurrent state."""

    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(3, 4, batch_first=True)

    def forward(self, x: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
        return self.gru(x)[0] / (1.0 + temperature.abs().mean())


class StackedStateSplit(nn.Module):
    """One ``[2, B, H]`` argument sliced between two GRUs: a layer gets part of a tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.GRU(3, 4, batch_first=True)
        self.b = nn.GRU(4, 4, batch_first=True)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> tuple:
        y, h1 = self.a(x, h[0:1])
        y, h2 = self.b(y, h[1:2])
        return y, torch.cat([h1, h2])

    def init_hidden(self, bsz: int) -> torch.Tensor:
        return torch.zeros(2, bsz, 4)


class PinnedToGuessedLength(nn.Module):
    """Time pinned to 3, the length of the exporter's own random input."""

    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(4, 5, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gru(x.reshape(x.size(0), 3, 4))[0]


class RequiredLengths(nn.Module):
    """The sentiment tutorial's ``forward(text, text_lengths)``: it always packs."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(10, 4)
        self.rnn = nn.LSTM(4, 5)
        self.fc = nn.Linear(5, 2)

    def forward(self, text: torch.Tensor, text_lengths: torch.Tensor) -> torch.Tensor:
        packed = pack_padded_sequence(self.embedding(text), text_lengths.to("cpu"))
        packed_output, (hidden, _cell) = self.rnn(packed)
        _output, _lengths = pad_packed_sequence(packed_output)
        return self.fc(hidden[-1])


class LengthsFromPadding(nn.Module):
    """Packs with lengths counted from the padding token: always packed, no argument to drop."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(10, 4, padding_idx=0)
        self.gru = nn.GRU(4, 5, batch_first=True)

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        lengths = (text != 0).sum(1).clamp(min=1)
        packed = pack_padded_sequence(
            self.embedding(text), lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        _, hidden = self.gru(packed)
        return hidden[-1]


@pytest.mark.parametrize(
    ("make", "example", "message"),
    [
        (
            PinnedTime,
            torch.zeros(2, 28, 28),
            "PinnedTime's code pins the time axis (axis 1 of the input) to 28: it runs on 28 but "
            "fails on 29",
        ),
        (
            PinnedBatch,
            torch.zeros(2, 5, 3),
            "PinnedBatch's code pins the batch axis (axis 0 of the input) to 2: it runs on 2 but "
            "fails on 3",
        ),
        (
            PinnedTime,
            None,
            "PinnedTime.forward fails on a random input of shape [2, 3, 28]",
        ),
        (
            NotStateArgument,
            None,
            "argument 'temperature' of NotStateArgument.forward does not reach any recurrent "
            "layer as its initial state",
        ),
        (
            StackedStateSplit,
            None,
            "argument 'h' reaches a's h only in part (shape [2, 2, 4], the state [1, 2, 4])",
        ),
        (
            RequiredLengths,
            None,
            "RequiredLengths.forward packs its input with the lengths 'text_lengths' before "
            "'rnn': a stream steps each sequence for as long as it has input, so it needs no "
            "packing.\nGive 'text_lengths' a default of None and pack only when it is passed",
        ),
        (
            LengthsFromPadding,
            None,
            "'gru' is called with a PackedSequence (pack_padded_sequence): a stream steps each "
            "sequence for as long as it has input, so it needs no packing.\nPack only when "
            "lengths are passed",
        ),
        (
            lambda: TimeSequencePrediction(future=2),
            torch.zeros(2, 5),
            "a cell-loop model's output has 2 more step(s) than its input (shapes [2, 4] for 2 "
            "steps, [2, 5] for 3): it predicts future steps from its own output",
        ),
        (
            PinnedToGuessedLength,
            None,
            "PinnedToGuessedLength.forward runs on a random input of shape [2, 3, 4] but fails "
            "on one more step",
        ),
    ],
    ids=[
        "pinned_time",
        "pinned_batch",
        "pinned_time_no_example",
        "not_state",
        "split",
        "packs_with_required_lengths",
        "packs_with_lengths_from_padding",
        "predicts_future_steps",
        "pinned_to_the_guessed_length",
    ],
)
def test_user_model_is_refused_in_a_short_message(
    make: Callable[[], nn.Module], example: torch.Tensor | None, message: str, tmp_path: Path
) -> None:
    torch.manual_seed(11)
    assert_refused_in_a_short_message(make(), tmp_path / "m.onnx", message, example, USER_PARITY)
