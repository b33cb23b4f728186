"""Text generation from a language model on a stream: greedy, sampling or beam search.

The prompt (after BOS, when the model has one) goes in as one chunk in one run; every further
token is one step of the same stream with the state carried. The prefix is never re-run. Beam
search steps its beams as the rows of one batched stream (:mod:`rnnstream.runtime.beam`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple, TypeVar

import numpy as np

from rnnstream.errors import InputError, NotALanguageModelError
from rnnstream.runtime.beam import BeamSearch
from rnnstream.runtime.model import Model
from rnnstream.runtime.sample import Sampler
from rnnstream.runtime.signature import Signature
from rnnstream.runtime.stream import Stream
from rnnstream.runtime.vocab import Vocabulary

__all__ = [
    "LANGUAGE_MODEL_KINDS",
    "Generation",
    "Timing",
    "Token",
    "bos_prefix",
    "generate",
    "language_model_vocab",
    "sample_tokens",
]

LANGUAGE_MODEL_KINDS = frozenset({"char_lm"})  # signature kinds that generate text

T = TypeVar("T")


class Token(NamedTuple):
    """One generated token: its id, its text ("" for BOS and EOS) and its log-probability."""

    id: int
    text: str
    logprob: float  # under the model's distribution (temperature 1, no top-k/top-p)


@dataclass(frozen=True)
class Timing:
    """How long generation took, not counting the caller's ``on_token`` callback."""

    tokens: int  # tokens (beam search: steps) produced
    first_token_ms: float  # from the call to the first token, the prompt's run included
    ms_per_token: float | None  # mean per token after the first: one step and the choice
    tokens_per_s: float | None  # 1000 / ms_per_token
    total_ms: float


@dataclass(frozen=True)
class Generation:
    """What :func:`generate` produced: the text, its tokens (EOS included when reached), their
    log-probabilities under the model, why it stopped and how long it took."""

    prompt: str
    text: str
    token_ids: list[int]
    logprobs: list[float]
    finish: str  # "eos" or "max_tokens"
    strategy: str  # "greedy", "sample" or "beam"
    timing: Timing

    @property
    def logprob(self) -> float:
        """The joint log-probability of the generated tokens given the prompt."""
        return float(sum(self.logprobs))

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "text": self.text,
            "token_ids": self.token_ids,
            "logprobs": self.logprobs,
            "logprob": self.logprob,
            "finish": self.finish,
            "strategy": self.strategy,
            "timing": asdict(self.timing),
        }


def bos_prefix(signature: Signature) -> np.ndarray:
    """The token ids a model's stream starts with before any text: ``[bos]`` for a model with a
    begin-of-sequence token, else none."""
    return np.asarray([] if signature.bos is None else [signature.bos], dtype=np.int64)


def language_model_vocab(model: Model) -> Vocabulary:
    """The vocabulary of a language model; :class:`NotALanguageModelError` for other models."""
    sig = model.signature
    if sig.vocab is None:
        raise NotALanguageModelError(
            f"{model.name} has no vocabulary: it is not a language model (kind {sig.kind!r}); "
            "generation needs a model exported with its vocabulary"
        )
    if sig.kind not in LANGUAGE_MODEL_KINDS:
        raise NotALanguageModelError(
            f"{model.name} is of kind {sig.kind!r}, not a language model "
            f"({', '.join(sorted(LANGUAGE_MODEL_KINDS))})"
        )
    logits = [o.shape[-1] for o in sig.outputs]
    if logits != [len(sig.vocab)]:
        raise NotALanguageModelError(
            f"{model.name}: a language model has one output of {len(sig.vocab)} logits (one per "
            f"vocabulary token), this one has outputs of last dimension {logits}"
        )
    return Vocabulary(sig.vocab)


def sample_tokens(
    model: Model,
    prompt: str = "",
    max_tokens: int = 200,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
) -> Iterator[Token]:
    """Yield generated tokens one at a time as they are produced, until EOS (yielded last) or
    ``max_tokens``.

    ``temperature`` 0 is greedy; see :class:`~rnnstream.runtime.sample.Sampler` for ``top_k``,
    ``top_p`` and ``seed``. The model, prompt and settings are checked before this returns.
    """
    ids, texts = _prepare(model, prompt, max_tokens)
    sampler = Sampler(temperature, top_k, top_p, seed)
    return _sampled(model.stream(), ids, max_tokens, sampler, texts, model.signature.eos)


def generate(
    model: Model,
    prompt: str = "",
    max_tokens: int = 200,
    *,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    beams: int | None = None,
    length_penalty: float | None = None,
    seed: int | None = None,
    on_token: Callable[[Token], None] | None = None,
) -> Generation:
    """Generate text after ``prompt`` until EOS or ``max_tokens`` tokens.

    Sampling (the default): ``temperature`` (default 1; 0 is greedy), ``top_k``, ``top_p``
    (nucleus) and ``seed`` (same seed, same text). Beam search with ``beams`` B: the B beams are
    the rows of one batched stream, ranked by log-probability / ``length ** length_penalty``
    (default 1); it is deterministic, so the sampling settings do not combine with it.
    ``on_token`` is called with each token as soon as it is final: at once when sampling, at the
    end for beam search. Raises :class:`NotALanguageModelError` for a model that is not a
    language model and :class:`InputError` for bad settings or a prompt outside the vocabulary.
    """
    timer = _Timer()
    if beams is None:
        if length_penalty is not None:
            raise InputError("length_penalty applies to beam search: give beams")
        t = 1.0 if temperature is None else temperature
        tokens = sample_tokens(
            model, prompt, max_tokens, temperature=t, top_k=top_k, top_p=top_p, seed=seed
        )
        produced = []
        for token in timer.each(tokens):
            produced.append(token)
            if on_token is not None:
                on_token(token)
        strategy = "greedy" if t == 0 else "sample"
    else:
        if any(v is not None for v in (temperature, top_k, top_p)):
            raise InputError("beam search is deterministic: temperature, top_k, top_p do not apply")
        produced = _beam_search(model, prompt, max_tokens, beams, length_penalty, timer)
        if on_token is not None:
            for token in produced:
                on_token(token)
        strategy = "beam"
    eos = model.signature.eos
    ended = bool(produced) and produced[-1].id == eos
    return Generation(
        prompt=prompt,
        text="".join(t.text for t in produced),
        token_ids=[t.id for t in produced],
        logprobs=[t.logprob for t in produced],
        finish="eos" if ended else "max_tokens",
        strategy=strategy,
        timing=timer.timing(),
    )


def _beam_search(
    model: Model,
    prompt: str,
    max_tokens: int,
    beams: int,
    length_penalty: float | None,
    timer: _Timer,
) -> list[Token]:
    ids, texts = _prepare(model, prompt, max_tokens)
    if beams < 1:
        raise InputError(f"beams must be >= 1, got {beams}")
    alpha = 1.0 if length_penalty is None else length_penalty
    search = BeamSearch(model.stream(batch=beams), ids, max_tokens, model.signature.eos, alpha)
    for _ in timer.each(iter(search)):
        pass
    best = search.best()
    return [Token(i, texts[i], lp) for i, lp in zip(best.token_ids, best.logprobs)]


def _sampled(
    stream: Stream,
    ids: np.ndarray,
    max_tokens: int,
    sampler: Sampler,
    texts: list[str],
    eos: int | None,
) -> Iterator[Token]:
    logits = stream.feed(ids)[-1]
    for produced in range(1, max_tokens + 1):
        token, logprob = sampler.choose(logits)
        yield Token(token, texts[token], logprob)
        if token == eos or produced == max_tokens:
            return
        logits = stream.step(token)  # only when the caller asks for the next token


def _prepare(model: Model, prompt: str, max_tokens: int) -> tuple[np.ndarray, list[str]]:
    """The prompt's token ids (after BOS) and the text of every token id ("" for BOS, EOS)."""
    vocab = language_model_vocab(model)
    if max_tokens < 1:
        raise InputError(f"max_tokens must be >= 1, got {max_tokens}")
    sig = model.signature
    ids = np.concatenate([bos_prefix(sig), vocab.encode(prompt)])
    if ids.size == 0:
        raise InputError(f"{model.name} has no BOS token: give a prompt to start from")
    texts = list(vocab.chars)
    for special in (sig.bos, sig.eos):
        if special is not None:
            texts[special] = ""
    return ids, texts


class _Timer:
    """Times the production of each item, apart from what the caller does in between."""

    def __init__(self) -> None:
        self._start = time.perf_counter()
        self._first: float | None = None
        self._steps: list[float] = []

    def each(self, items: Iterator[T]) -> Iterator[T]:
        while True:
            start = time.perf_counter()
            try:
                item = next(items)
            except StopIteration:
                return
            end = time.perf_counter()
            self._steps.append(end - start)
            if self._first is None:
                self._first = end - self._start
            yield item

    def timing(self) -> Timing:
        first = self._first or 0.0
        rest = self._steps[1:]
        ms = 1e3 * sum(rest) / len(rest) if rest else None
        return Timing(
            tokens=len(self._steps),
            first_token_ms=1e3 * first,
            ms_per_token=ms,
            tokens_per_s=1e3 / ms if ms else None,
            total_ms=1e3 * (first + sum(rest)),
        )
