"""More recurrent models in the styles of real projects, held out while the exporter was written.

sb3-contrib's RecurrentPPO (state and ``episode_starts`` passed in), DeepAR-style forecasters
with distribution heads, a seq2seq encoder, a GRU speech enhancer's mask, DeepSpeech's Conv2d
front-end over ``[batch, channels, time, freq]``, ``proj_size``, ``nn.Sequential`` with a
``SelectItem``, ``hx=`` as a keyword, inputs transposed before the recurrent layer, state
returned as a list, namedtuple and dataclass outputs, a learned h0, ``self.hidden``. Each
streams like PyTorch (the check of ``tests.export.streaming.export_and_stream_like_pytorch``) or
is refused in at most three lines naming the cause and the fix.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.export.streaming import (
    USER_PARITY,
    Case,
    assert_refused_in_a_short_message,
    export_and_stream_like_pytorch,
)


class RecurrentPPOPolicy(nn.Module):
    """sb3-contrib style: ``forward(obs, lstm_states=None, episode_starts=None)``, the state
    zeroed where an episode starts, action logits and value returned with the state."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Linear(6, 8), nn.Tanh())
        self.lstm_actor = nn.LSTM(8, 8, batch_first=True)
        self.action_net, self.value_net = nn.Linear(8, 3), nn.Linear(8, 1)

    def forward(
        self, obs: torch.Tensor, lstm_states: tuple | None = None, episode_starts: object = None
    ) -> tuple:
        if lstm_states is not None and episode_starts is not None:
            keep = (1.0 - episode_starts).view(1, -1, 1)
            lstm_states = (lstm_states[0] * keep, lstm_states[1] * keep)
        latent, lstm_states = self.lstm_actor(self.features(obs), lstm_states)
        return self.action_net(latent), self.value_net(latent), lstm_states


class DeepARNormal(nn.Module):
    """A DeepAR-style forecaster: target and covariates concatenated per step, a 2-layer LSTM
    with dropout, a Normal's ``(loc, scale)`` nested in the output next to the state."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.LSTM(1 + 3, 8, num_layers=2, batch_first=True, dropout=0.1)
        self.distribution_projection = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor, hidden_state: tuple | None = None) -> tuple:
        target, covariates = x[..., :1], x[..., 1:]
        out, hidden_state = self.rnn(torch.cat([target, covariates], dim=-1), hidden_state)
        loc, scale = self.distribution_projection(out).chunk(2, dim=-1)
        return (loc.squeeze(-1), F.softplus(scale).squeeze(-1) + 1e-3), hidden_state


class Seq2SeqEncoder(nn.Module):
    """The seq2seq tutorials' encoder: embedded, dropped out, time-major GRU; outputs and state."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(20, 8)
        self.rnn = nn.GRU(8, 8, num_layers=2, dropout=0.3)
        self.dropout = nn.Dropout(0.3)

    def forward(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.rnn(self.dropout(self.embedding(src)))


class MaskEnhancer(nn.Module):
    """A GRU speech enhancer: a sigmoid mask over the spectrum frame, applied to the input."""

    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(8, 12, num_layers=2, batch_first=True)
        self.mask = nn.Linear(12, 8)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.mask(self.gru(spec)[0])) * spec


class DeepSpeechFrontEnd(nn.Module):
    """DeepSpeech-ish: ``[batch, 1, time, freq]`` through a causal Conv2d (stride over freq
    only), BatchNorm2d and Hardtanh, channels and freq merged, then a GRU and log-softmax."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.ZeroPad2d((1, 1, 2, 0)),
            nn.Conv2d(1, 3, (3, 3), stride=(1, 2)),
            nn.BatchNorm2d(3),
            nn.Hardtanh(0, 20),
        )
        self.gru = nn.GRU(3 * 5, 6, batch_first=True)
        self.fc = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        batch, channels, steps, freq = y.shape
        y = y.permute(0, 2, 1, 3).reshape(batch, steps, channels * freq)
        return F.log_softmax(self.fc(self.gru(y)[0]), dim=-1)


class TimeSecond(nn.Module):
    """The wrapper the refusal of a ``[batch, channels, time, ...]`` input asks for."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.transpose(1, 2))


class ProjectedLSTM(nn.Module):
    """An LSTM with ``proj_size`` (h smaller than c) under a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(5, 10, num_layers=2, proj_size=4, batch_first=True)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.lstm(x)[0])


class SelectItem(nn.Module):
    """Picks one item of a tuple, to put an LSTM in an ``nn.Sequential``."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def forward(self, items: tuple) -> torch.Tensor:
        return items[self.index]


def sequential_lstm() -> nn.Module:
    return nn.Sequential(
        nn.Linear(4, 6), nn.LSTM(6, 6, batch_first=True), SelectItem(0), nn.Linear(6, 3)
    )


class KeywordHidden(nn.Module):
    """``self.rnn(x, hx=h)`` with ``h=None`` by default, a GRU without biases."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.GRU(4, 6, num_layers=2, bias=False, batch_first=True)
        self.fc = nn.Linear(6, 2, bias=False)

    def forward(self, x: torch.Tensor, h: torch.Tensor | None = None) -> tuple:
        out, h = self.rnn(x, hx=h)
        return self.fc(out), h


class ListState(nn.Module):
    """``forward(x, states)`` over an LSTM then a GRU, the state returned as a list."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(4, 6, batch_first=True)
        self.gru = nn.GRU(6, 5, batch_first=True)

    def forward(self, x: torch.Tensor, states: list) -> tuple[torch.Tensor, list]:
        out, lstm_state = self.lstm(x, states[0])
        out, gru_state = self.gru(out, states[1])
        return out, [lstm_state, gru_state]


PolicyOutput = namedtuple("PolicyOutput", ["logits", "value"])


class NamedTupleHeads(nn.Module):
    """Heads returned in a namedtuple, exported under its field names."""

    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(4, 6, batch_first=True)
        self.logits, self.value = nn.Linear(6, 3), nn.Linear(6, 1)

    def forward(self, x: torch.Tensor) -> PolicyOutput:
        out = self.gru(x)[0]
        return PolicyOutput(self.logits(out), self.value(out))


@dataclass
class TaggerOutput:
    logits: torch.Tensor
    confidence: torch.Tensor
    hidden: tuple[torch.Tensor, torch.Tensor]


class DataclassHeads(nn.Module):
    """A HuggingFace-like ``ModelOutput`` dataclass: two heads and the state, over token ids
    with a ``padding_idx``."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(15, 6, padding_idx=0)
        self.lstm = nn.LSTM(6, 7, batch_first=True)
        self.logits, self.confidence = nn.Linear(7, 15), nn.Linear(7, 1)

    def forward(self, ids: torch.Tensor) -> TaggerOutput:
        out, hidden = self.lstm(self.embedding(ids))
        return TaggerOutput(self.logits(out), torch.sigmoid(self.confidence(out)), hidden)


class DilatedCausalConvLSTM(nn.Module):
    """``F.pad`` on the left before an unpadded dilated Conv1d, then an LSTM."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(4, 6, 3, dilation=2)
        self.lstm = nn.LSTM(6, 5, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.conv(F.pad(x.transpose(1, 2), (4, 0))))
        return self.lstm(y.transpose(1, 2))[0]


class PermutedIntoTimeMajor(nn.Module):
    """A batch-first input permuted into a time-major LSTM and back (the layer alone would say
    time-major)."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(4, 6)
        self.fc = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x.permute(1, 0, 2))
        return self.fc(out.permute(1, 0, 2))


class TransposedIntoBatchFirst(nn.Module):
    """A time-major input (``forward(x, hidden)``) transposed into a batch-first GRU."""

    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(4, 5, batch_first=True)

    def forward(self, x: torch.Tensor, hidden: torch.Tensor) -> tuple:
        out, hidden = self.gru(x.transpose(0, 1), hidden)
        return out.transpose(0, 1), hidden


CASES = [
    Case(
        "recurrent_ppo_optional_state_and_episode_starts",
        RecurrentPPOPolicy,
        lambda m, x: list(m(x)[:2]),
        ("y0", "y1"),
        features=6,
    ),
    Case(
        "deepar_nested_distribution",
        DeepARNormal,
        lambda m, x: list(m(x)[0]),
        ("y0", "y1"),
        features=4,
    ),
    Case(
        "seq2seq_encoder_time_major",
        Seq2SeqEncoder,
        lambda m, x: [m(x)[0]],
        tokens=20,
        batch_first=False,
    ),
    Case("gru_enhancer_mask", MaskEnhancer, lambda m, x: [m(x)], features=8),
    Case(
        "deepspeech_conv2d_channels_first_wrapped",
        lambda: TimeSecond(DeepSpeechFrontEnd()),
        lambda m, x: [m(x)],
        features=(1, 10),
        example=True,
    ),
    Case("lstm_proj_size", ProjectedLSTM, lambda m, x: [m(x)], features=5),
    Case("sequential_select_item", sequential_lstm, lambda m, x: [m(x)], features=4),
    Case("hx_keyword_no_bias", KeywordHidden, lambda m, x: [m(x)[0]], features=4),
    Case("state_returned_as_list", ListState, lambda m, x: [m(x, [None, None])[0]], features=4),
    Case(
        "namedtuple_heads",
        NamedTupleHeads,
        lambda m, x: list(m(x)),
        ("logits", "value"),
        features=4,
    ),
    Case(
        "dataclass_heads_padding_idx",
        DataclassHeads,
        lambda m, x: [m(x).logits, m(x).confidence],
        ("logits", "confidence"),
        tokens=15,
    ),
    Case("fpad_dilated_causal_conv", DilatedCausalConvLSTM, lambda m, x: [m(x)], features=4),
    Case("permuted_into_time_major", PermutedIntoTimeMajor, lambda m, x: [m(x)], features=4),
    Case(
        "transposed_into_batch_first",
        TransposedIntoBatchFirst,
        lambda m, x: [m(x, torch.zeros(1, x.shape[1], 5))[0]],
        features=4,
        batch_first=False,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_held_out_model_exports_and_streams_like_pytorch(case: Case, tmp_path: Path) -> None:
    export_and_stream_like_pytorch(case, tmp_path)


class EpisodeStartsRequired(nn.Module):
    """sb3-contrib's ``_process_sequence``: state and ``episode_starts`` both required."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(4, 6)

    def forward(
        self, features: torch.Tensor, lstm_states: tuple, episode_starts: torch.Tensor
    ) -> tuple:
        outputs = []
        for step, start in zip(features, episode_starts):
            keep = (1.0 - start).view(1, -1, 1)
            out, lstm_states = self.lstm(
                step.unsqueeze(0), (keep * lstm_states[0], keep * lstm_states[1])
            )
            outputs.append(out)
        return torch.cat(outputs), lstm_states


class CharRNN(nn.Module):
    """PyTorch's char-RNN tutorial: one character per call, ``view(1, 1, -1)``, and an
    ``init_hidden()`` without a batch size."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Embedding(30, 8)
        self.gru = nn.GRU(8, 8)
        self.decoder = nn.Linear(8, 30)

    def forward(self, input: torch.Tensor, hidden: torch.Tensor) -> tuple:
        output, hidden = self.gru(self.encoder(input.view(1, -1)).view(1, 1, -1), hidden)
        return self.decoder(output.view(1, -1)), hidden

    def init_hidden(self) -> torch.Tensor:
        return torch.zeros(1, 1, 8)


class Conditioned(nn.Module):
    """A second input: a conditioning vector repeated over time and concatenated."""

    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(4 + 3, 6, batch_first=True)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        cond = cond.unsqueeze(1).expand(-1, x.shape[1], -1)
        return self.gru(torch.cat([x, cond], -1))[0]


class ScriptedHead(nn.Module):
    """A head compiled with ``torch.jit.script``."""

    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(4, 6, batch_first=True)
        self.head = torch.jit.script(nn.Sequential(nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 2)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.gru(x)[0])


class DoubleHead(nn.Module):
    """A head kept in float64, the features cast to it."""

    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(4, 6, batch_first=True)
        self.fc = nn.Linear(6, 2).double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.gru(x)[0].double()).float()


class ChannelFrames(nn.Module):
    """Frames ``[batch, 1, time, freq]``, the channel axis squeezed before a GRU."""

    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(8, 6, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gru(x.squeeze(1))[0]


class LearnedInitialState(nn.Module):
    """A GRU started from a learned ``nn.Parameter`` h0, expanded to the batch."""

    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(4, 6, batch_first=True)
        self.h0 = nn.Parameter(torch.randn(1, 1, 6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gru(x, self.h0.expand(-1, x.size(0), -1).contiguous())[0]


class StatefulAttribute(nn.Module):
    """Old tutorials' ``out, self.hidden = self.lstm(x, self.hidden)``: state kept between calls."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(4, 6, batch_first=True)
        self.hidden = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, self.hidden = self.lstm(x, self.hidden)
        return out


class FeedbackCellLoop(nn.Module):
    """A GRUCell fed each frame and its own last prediction: its cell's input size (5) is not the
    frame's (4), so the exporter's guessed input is wrong."""

    def __init__(self) -> None:
        super().__init__()
        self.cell = nn.GRUCell(4 + 1, 6)
        self.out = nn.Linear(6, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, y = x.new_zeros(x.size(0), 6), x.new_zeros(x.size(0), 1)
        ys = []
        for t in range(x.size(1)):
            h = self.cell(torch.cat([x[:, t], y], -1), h)
            y = self.out(h)
            ys.append(y)
        return torch.cat(ys, 1)


@pytest.mark.parametrize(
    ("make", "example", "message"),
    [
        (
            EpisodeStartsRequired,
            None,
            "EpisodeStartsRequired.forward requires 'lstm_states', 'episode_starts' besides the "
            "input; the exporter passes recurrent state there, and the model fails on its "
            "layers' zero state (RuntimeError: The size of tensor a (12) must match the size of "
            "tensor b (2) at non-singleton dimension 1)."
            "\nIf one of 'lstm_states', 'episode_starts' is not recurrent state, fix its value "
            "in a wrapper module whose forward takes only the input",
        ),
        (
            CharRNN,
            None,
            "CharRNN.forward runs only on one step of one sequence, not on a random input of "
            "shape [3, 2] (RuntimeError: input.size(-1) must be equal to input_size. Expected 8, "
            "got 48): its code pins the batch and time axes to 1 (e.g. view(1, 1, -1)).",
        ),
        (
            Conditioned,
            None,
            "Conditioned.forward requires 'cond' besides the input; the exporter passes "
            "recurrent state there, and the model fails on its layers' zero state (RuntimeError: "
            "expand(",
        ),
        (
            ScriptedHead,
            None,
            "submodule 'head' is compiled with torch.jit.script/trace, which torch.export cannot "
            "trace; export the model built from plain nn.Modules",
        ),
        (
            DoubleHead,
            None,
            "parameter 'fc.weight' is torch.float64; export needs float32 weights: call "
            "model.float() first",
        ),
        (
            ChannelFrames,
            torch.zeros(2, 1, 5, 8),
            "ChannelFrames's code pins the time axis (axis 1 of the input) to 1: it runs on 1 but "
            "fails on 2 (ValueError: GRU: Expected input to be 2D or 3D, got 4D instead).\nIt "
            "runs on any length of axis 2: if time is that axis ([batch, channels, time, ...]), "
            "export a wrapper whose forward(x) calls the model on x.transpose(1, 2)",
        ),
        (
            LearnedInitialState,
            None,
            "'gru' starts from a non-zero state the forward makes (a learned h0, or one computed "
            "from an input or another layer); a stream starts every sequence from zeros.\nMake "
            "the initial state an argument (forward(x, hidden)) and set each new stream's state "
            "to it (Stream.state), or train from zeros.",
        ),
        (
            StatefulAttribute,
            None,
            "StatefulAttribute stores self.hidden during forward, keeping state between calls; a "
            "stream carries the state itself.\nReturn the state instead (forward(x, "
            "hidden=None) -> (y, hidden))",
        ),
        (
            FeedbackCellLoop,
            None,
            "FeedbackCellLoop.forward fails on a random input of shape [2, 3, 5] (RuntimeError: "
            "input has inconsistent input_size: got 6 expected 5).\nPass example=",
        ),
    ],
    ids=[
        "episode_starts_required",
        "char_rnn_one_step_one_sequence",
        "conditioning_input",
        "jit_scripted_submodule",
        "float64_head",
        "channels_before_time",
        "learned_initial_state",
        "state_kept_on_the_module",
        "cell_loop_input_guessed_wrong",
    ],
)
def test_held_out_model_is_refused_in_a_short_message(
    make: Callable[[], nn.Module], example: torch.Tensor | None, message: str, tmp_path: Path
) -> None:
    torch.manual_seed(13)
    assert_refused_in_a_short_message(make(), tmp_path / "m.onnx", message, example, USER_PARITY)
