"""Generation on the runtime: greedy, sampling (temperature, top-k, top-p), beam search over one
batched stream, Stream.reorder, the CLI, and per-token log-probabilities against PyTorch."""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import rnnstream
from rnnstream.assets import DEMO_CHECKPOINT, DEMO_ONNX
from rnnstream.bench import run_benchmark
from rnnstream.errors import InputError, NotALanguageModelError, SignatureError
from rnnstream.export import ModelDescription, ParitySettings, export
from rnnstream.models import CharLM, CharLMConfig, load_checkpoint
from rnnstream.models.charlm import BOS, EOS
from rnnstream.runtime import Vocabulary
from rnnstream.runtime.generate import Generation, generate, sample_tokens
from tests.tolerances import PARITY, assert_close

PROMPT = "def "

# The trap: next-token probabilities by the previous token. Greedy takes "a" (0.40), after which
# nothing is likely (0.24 at best); "b" (0.29) leads to "c" (0.9); "g" (0.31) ends the text, as
# every character but "a" and "b" does. Best joint log-probability: "g"; best per token: "bc".
TRAP_CHARS = "abcdefg"
A, B, C, D, E, F, G = range(2, 9)
TRAP = {
    BOS: {A: 0.40, G: 0.31, B: 0.29},
    A: {C: 0.24, D: 0.2, E: 0.2, F: 0.18, G: 0.18},
    B: {C: 0.9, D: 0.1},
    **{t: {EOS: 1.0} for t in (C, D, E, F, G, EOS)},
}


@pytest.fixture(scope="module")
def demo() -> rnnstream.Model:
    return rnnstream.load(DEMO_ONNX)


@pytest.fixture(scope="module")
def demo_torch() -> CharLM:
    return load_checkpoint(DEMO_CHECKPOINT).eval()


def trap_module() -> CharLM:
    """A one-layer ReLU RNN whose hidden state is the one-hot current token and whose head holds
    log TRAP: the logits of the next token are those of a table indexed by the current one."""
    config = CharLMConfig(
        cell="rnn_relu", num_layers=1, hidden_size=9, embed_size=9, chars=TRAP_CHARS
    )
    module = CharLM(config).eval()
    size = config.vocab_size
    table = np.full((size, size), 1e-12)
    for current, following in TRAP.items():
        for token, p in following.items():
            table[current, token] = p
    with torch.no_grad():
        for param in module.parameters():
            param.zero_()
        module.embed.weight.copy_(torch.eye(size))
        module.rnn.weight_ih_l0.copy_(torch.eye(size))
        module.head.weight.copy_(torch.from_numpy(np.log(table).T.astype(np.float32)))
    return module


@pytest.fixture(scope="module")
def trap(tmp_path_factory) -> tuple[CharLM, rnnstream.Model]:
    module = trap_module()
    path = tmp_path_factory.mktemp("trap") / "trap.onnx"
    export(module, path, parity=ParitySettings(steps=50))  # a CharLM describes itself
    return module, rnnstream.load(path)


def torch_logprobs(module: CharLM, prompt_ids: list[int], token_ids: list[int]) -> np.ndarray:
    """PyTorch's log-probability of each of ``token_ids`` after the prompt and the ones before."""
    ids = torch.tensor([prompt_ids + token_ids[:-1]])
    with torch.no_grad():
        logits, _ = module(ids)
    logp = torch.log_softmax(logits[0].double(), dim=-1)[len(prompt_ids) - 1 :]
    return logp[torch.arange(len(token_ids)), torch.tensor(token_ids)].numpy()


def prompt_ids(model: rnnstream.Model, prompt: str) -> list[int]:
    return [BOS, *Vocabulary(model.signature.vocab).encode(prompt).tolist()]


# --- greedy, sampling ------------------------------------------------------------------------


def test_greedy_equals_top_k_1_and_temperature_to_0(demo):
    greedy = generate(demo, PROMPT, 80, temperature=0)
    assert greedy.strategy == "greedy" and len(greedy.token_ids) == 80
    for settings in ({"top_k": 1}, {"temperature": 1e-6}, {"top_p": 1e-9}):
        sampled = generate(demo, PROMPT, 80, seed=0, **settings)
        assert sampled.strategy == "sample"
        assert sampled.token_ids == greedy.token_ids, settings
        assert sampled.text == greedy.text
        assert_close(sampled.logprobs, greedy.logprobs)


def test_same_seed_same_text(demo):
    def text(seed: int, **settings) -> str:
        return generate(demo, PROMPT, 60, temperature=1.0, seed=seed, **settings).text

    assert text(3) == text(3)
    assert text(3) != text(4)
    assert text(5, top_k=10, top_p=0.9) == text(5, top_k=10, top_p=0.9)


def test_top_k_and_top_p_keep_the_most_likely_tokens(demo):
    k, p = 5, 0.6
    for settings in ({"top_k": k}, {"top_p": p}):
        out = generate(demo, PROMPT, 150, temperature=1.0, seed=1, **settings)
        start = prompt_ids(demo, PROMPT)
        logits = demo.stream().feed(start + out.token_ids[:-1])[len(start) - 1 :]
        probs = np.exp(logits.astype(np.float64) - logits.max(axis=-1, keepdims=True))
        probs /= probs.sum(axis=-1, keepdims=True)
        for step, token in enumerate(out.token_ids):
            row = probs[step]
            above = row[row > row[token]]
            if "top_k" in settings:
                assert above.size < k
            else:  # the tokens more likely than the drawn one had not reached p yet
                assert above.sum() < p
        assert len(set(out.token_ids)) > 5  # really sampled


def test_tokens_come_as_they_are_produced(demo):
    seen = []

    class Enough(Exception):
        pass

    def on_token(token) -> None:
        seen.append(token)
        if len(seen) == 3:
            raise Enough

    with pytest.raises(Enough):  # 100k tokens would take seconds: the callback runs per token
        generate(demo, PROMPT, 100_000, temperature=1.0, seed=0, on_token=on_token)
    assert len(seen) == 3
    tokens = sample_tokens(demo, PROMPT, 5, temperature=0)
    first = next(tokens)
    assert first.text and first.id >= 2 and first.logprob < 0
    assert [first, *tokens] == list(sample_tokens(demo, PROMPT, 5, temperature=0))


def test_on_token_sees_every_token_and_the_timing_is_filled(demo):
    seen = []
    out = generate(demo, PROMPT, 40, temperature=0.8, seed=2, on_token=seen.append)
    assert [t.id for t in seen] == out.token_ids and "".join(t.text for t in seen) == out.text
    t = out.timing
    assert t.tokens == 40 and 0 < t.ms_per_token < t.total_ms and t.first_token_ms > 0
    assert t.tokens_per_s == pytest.approx(1e3 / t.ms_per_token)
    data = json.loads(json.dumps(out.to_dict()))
    assert data["logprob"] == pytest.approx(sum(out.logprobs)) and data["timing"]["tokens"] == 40


# --- EOS, the trap model, beam search --------------------------------------------------------


def test_eos_stops_generation(trap):
    _, model = trap
    for seed in range(5):
        out = generate(model, "", 50, temperature=1.0, seed=seed)
        assert out.finish == "eos" and out.token_ids[-1] == EOS and len(out.token_ids) <= 3
        assert out.text == Vocabulary(TRAP_CHARS).decode(np.asarray(out.token_ids[:-1]) - 2)
    short = generate(model, "", 1, temperature=0)
    assert (short.text, short.token_ids, short.finish) == ("a", [A], "max_tokens")


def best_ending_text(module: CharLM, length_penalty: float) -> tuple[float, tuple[int, ...]]:
    """The best (log-probability / length ** length_penalty, characters) of every text of up to
    three characters that ends (after which only improbable tokens remain)."""
    return max(
        (torch_logprobs(module, [BOS], [*chars, EOS]).sum() / (n + 1) ** length_penalty, chars)
        for n in (1, 2, 3)
        for chars in itertools.product(range(2, 9), repeat=n)
    )


def test_beam_search_finds_the_sequences_greedy_misses(trap):
    module, model = trap
    greedy = generate(model, "", 10, temperature=0)
    assert (greedy.text, greedy.token_ids, greedy.finish) == ("ac", [A, C, EOS], "eos")
    assert greedy.logprob == pytest.approx(math.log(0.40 * 0.24), abs=1e-6)  # -2.343
    # Length-normalised (the default): "bc" and EOS, -1.343 / 3 tokens.
    beam = generate(model, "", 10, beams=3)
    assert (beam.text, beam.token_ids, beam.finish) == ("bc", [B, C, EOS], "eos")
    assert beam.logprob == pytest.approx(math.log(0.29 * 0.9), abs=1e-6)  # -1.343
    assert best_ending_text(module, 1.0) == (pytest.approx(beam.logprob / 3, abs=1e-6), (B, C))
    # Not normalised: the highest joint log-probability, "g" and EOS (-1.171).
    raw = generate(model, "", 10, beams=3, length_penalty=0)
    assert (raw.text, raw.token_ids) == ("g", [G, EOS])
    assert raw.logprob == pytest.approx(math.log(0.31), abs=1e-6)
    assert best_ending_text(module, 0.0) == (pytest.approx(raw.logprob, abs=1e-6), (G,))
    for out in (beam, raw):
        assert_close(out.logprobs, torch_logprobs(module, [BOS], out.token_ids), PARITY)
    assert generate(model, "", 10, beams=1).token_ids == greedy.token_ids
    # Two beams keep "a" and "g" after the first step and lose "b": still better than greedy.
    assert generate(model, "", 10, beams=2, length_penalty=0).token_ids == [G, EOS]


def test_one_beam_equals_greedy(demo):
    greedy = generate(demo, PROMPT, 60, temperature=0)
    beam = generate(demo, PROMPT, 60, beams=1)
    assert beam.strategy == "beam" and beam.token_ids == greedy.token_ids
    assert_close(beam.logprobs, greedy.logprobs)


# --- log-probabilities against PyTorch -------------------------------------------------------


@pytest.mark.parametrize(
    "settings",
    [
        {"temperature": 0.9, "top_k": 40, "top_p": 0.95, "seed": 0},
        {"temperature": 0},
        {"beams": 3},
    ],
    ids=["sample", "greedy", "beams"],
)
def test_logprobs_equal_a_pytorch_forward_of_the_same_tokens(demo, demo_torch, settings):
    out = generate(demo, PROMPT, 120, **settings)
    want = torch_logprobs(demo_torch, prompt_ids(demo, PROMPT), out.token_ids)
    assert len(out.logprobs) == len(out.token_ids) == want.size
    assert_close(out.logprobs, want, PARITY)


# --- errors ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def frames_onnx(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("frames") / "frames.onnx"
    export(torch.nn.LSTM(4, 8, batch_first=True), path, parity=ParitySettings(steps=50))
    return path


def test_a_model_without_vocabulary_or_of_another_kind_is_refused(frames_onnx, tmp_path):
    model = rnnstream.load(frames_onnx)
    with pytest.raises(NotALanguageModelError, match="no vocabulary"):
        generate(model, "a")
    with pytest.raises(SignatureError, match="not a language model"):
        sample_tokens(model, "a")  # checked before the first token is asked for
    torch.manual_seed(0)
    lm = CharLM(CharLMConfig(num_layers=1, hidden_size=8, embed_size=4, chars="ab"))
    generic = ModelDescription(kind="generic", vocab=lm.config.vocab, bos=BOS)
    export(lm, tmp_path / "g.onnx", description=generic, parity=ParitySettings(steps=20))
    with pytest.raises(NotALanguageModelError, match="of kind 'generic', not a language model"):
        generate(rnnstream.load(tmp_path / "g.onnx"), beams=2)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"temperature": -1}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_k": 0}, "top_k"),
        ({"top_p": 0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"beams": 0}, "beams"),
        ({"length_penalty": 0.5}, "length_penalty applies to beam search"),
        ({"beams": 2, "temperature": 0.5}, "beam search is deterministic"),
        ({"beams": 2, "top_k": 3}, "beam search is deterministic"),
        ({"beams": 2, "length_penalty": float("inf")}, "length_penalty"),
        ({"prompt": "caf\u00e9"}, "not in the model's vocabulary"),
    ],
)
def test_bad_settings_are_input_errors(demo, settings, message):
    with pytest.raises(InputError, match=message):
        generate(demo, **{"prompt": PROMPT, **settings})


def test_a_model_without_bos_needs_a_prompt(tmp_path):
    torch.manual_seed(0)
    lm = CharLM(CharLMConfig(num_layers=1, hidden_size=8, embed_size=4, chars="ab"))
    no_bos = replace(lm.config.describe(), bos=None)
    export(lm, tmp_path / "nobos.onnx", description=no_bos, parity=ParitySettings(steps=20))
    model = rnnstream.load(tmp_path / "nobos.onnx")
    with pytest.raises(InputError, match="no BOS token"):
        generate(model)
    assert len(generate(model, "ab", 5, temperature=0).token_ids) <= 5


# --- Stream.reorder --------------------------------------------------------------------------


def test_reorder_permutes_and_duplicates_rows(demo):
    rng = np.random.default_rng(0)
    stream = demo.stream(batch=4)
    stream.feed(rng.integers(2, 100, (4, 7)))
    for rows in ([2, 0, 2, 1], [3, 3, 3, 3], [1, 0, 3, 2]):  # both ping-pong buffers are hit
        before = stream.state
        stream.reorder(np.asarray(rows))
        after = stream.state
        for spec in demo.signature.states:
            want = np.take(before[spec.input], rows, axis=spec.batch_axis)
            np.testing.assert_array_equal(after[spec.input], want)
        control = demo.stream(batch=4)
        control.state = after
        x = rng.integers(2, 100, 4)
        np.testing.assert_array_equal(stream.step(x), control.step(x))  # the bindings still hold
        np.testing.assert_array_equal(stream.state["c0"], control.state["c0"])
    single = demo.stream()
    single.step(5)
    state = single.state
    single.reorder([0])
    np.testing.assert_array_equal(single.state["h0"], state["h0"])


@pytest.mark.parametrize(
    "rows",
    [[0, 1, 2], [0, 1, 2, 4], [-1, 0, 1, 2], [0.0, 1.0, 2.0, 3.0], [[0, 1, 2, 3]], [True] * 4, []],
    ids=["short", "too-large", "negative", "float", "2-d", "bool", "empty"],
)
def test_reorder_rejects_bad_rows_and_keeps_the_state(demo, rows):
    stream = demo.stream(batch=4)
    stream.feed(np.random.default_rng(1).integers(2, 100, (4, 5)))
    before = stream.state
    with pytest.raises(InputError, match="rows"):
        stream.reorder(rows)
    for name, value in stream.state.items():
        np.testing.assert_array_equal(value, before[name])


# --- benchmark -------------------------------------------------------------------------------


def test_benchmark_times_generation_next_to_stream_step(demo, frames_onnx):
    result = run_benchmark(demo, steps=30, rounds=1, pool_sizes=())
    assert {"stream.step", "generate (sampling)"} <= set(result.rows)
    assert "generate (sampling) / stream.step" in result.ratios()
    frames = run_benchmark(rnnstream.load(frames_onnx), steps=5, rounds=1, pool_sizes=())
    assert "generate (sampling)" not in frames.rows


def test_generation_is_exported_at_the_top_level():
    assert rnnstream.generate is generate and rnnstream.Generation is Generation
