"""Beam search over one batched stream: the beams are its rows, reordered after every step.

Each step runs the B rows once, scores every (beam, next token) pair by its joint log-probability
and keeps the B best that do not end the text; :meth:`Stream.reorder` then gives each kept beam
its parent's state. A beam that ends with EOS (ranked among the best B) is set aside, scored by
its log-probability divided by ``length ** length_penalty``. The prefix is never re-run.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from rnnstream.errors import InputError
from rnnstream.runtime.sample import log_softmax
from rnnstream.runtime.stream import Stream

__all__ = ["BeamSearch", "Hypothesis"]


@dataclass(frozen=True)
class Hypothesis:
    """A generated sequence: its token ids, their log-probabilities and its normalised score."""

    token_ids: list[int]
    logprobs: list[float]
    score: float  # sum(logprobs) / len(token_ids) ** length_penalty


class BeamSearch:
    """Beam search with ``stream.batch`` beams from the prompt ``prompt_ids`` (BOS included).

    Iterating runs the search one step (one run of the stream) per item; :meth:`best` is the
    result. It ends after ``max_tokens`` tokens, or once ``stream.batch`` hypotheses have ended
    with EOS and no live beam scores better than the worst of them.
    """

    def __init__(
        self,
        stream: Stream,
        prompt_ids: np.ndarray,
        max_tokens: int,
        eos: int | None,
        length_penalty: float = 1.0,
    ) -> None:
        if not np.isfinite(length_penalty):
            raise InputError(f"length_penalty must be a finite number, got {length_penalty}")
        if stream.batch is None:
            raise InputError("beam search needs a batched stream: model.stream(batch=beams)")
        self.beams = stream.batch
        self._stream = stream
        self._prompt = np.tile(prompt_ids, (self.beams, 1))
        self._max_tokens = max_tokens
        self._eos = eos
        self._alpha = length_penalty
        # Before the first step all rows hold the prompt: only row 0 may extend it.
        self._scores = np.full(self.beams, -np.inf)
        self._scores[0] = 0.0
        self._tokens = np.zeros((self.beams, 0), dtype=np.int64)
        self._logps = np.zeros((self.beams, 0))
        self._ended: list[Hypothesis] = []
        self._parents = np.zeros(self.beams, dtype=np.int64)  # each row's parent, last step

    def __iter__(self) -> Iterator[int]:
        """Run the search; yields the length of the beams after each step."""
        length = 0
        while length < self._max_tokens:
            if length == 0:
                logits = self._stream.feed(self._prompt)[:, -1]
            else:
                logits = self._stream.step(self._tokens[:, -1])
            length += 1
            live = self._extend(log_softmax(logits), length)
            yield length
            if not live or self._settled(length):
                return
            if length < self._max_tokens:
                self._stream.reorder(self._parents)

    def best(self) -> Hypothesis:
        """The best hypothesis by normalised score; ones that ended with EOS win ties."""
        live = [
            Hypothesis(t.tolist(), lp.tolist(), self._normalised(s, t.size))
            for t, lp, s in zip(self._tokens, self._logps, self._scores)
            if np.isfinite(s) and t.size
        ]
        if not (self._ended or live):
            raise InputError("beam search has not run")
        return max(self._ended + live, key=lambda h: h.score)

    def _extend(self, logp: np.ndarray, length: int) -> bool:
        """Choose the next beams from ``logp`` (``[beams, vocab]``); False when none is left."""
        beams, vocab = logp.shape
        joint = (self._scores[:, None] + logp).ravel()
        n = min(2 * beams, joint.size)  # at most one EOS per beam: B others always remain
        top = np.argpartition(-joint, n - 1)[:n]
        top = top[np.lexsort((top, -joint[top]))]  # best first, ties to the lowest index
        parents: list[int] = []
        tokens: list[int] = []
        for rank, index in enumerate(top.tolist()):
            if not np.isfinite(joint[index]):
                break
            parent, token = divmod(index, vocab)
            if token == self._eos:
                if rank < beams:
                    self._end(parent, token, float(logp[parent, token]), length)
                continue
            parents.append(parent)
            tokens.append(token)
            if len(parents) == beams:
                break
        if not parents:
            self._scores[:] = -np.inf
            return False
        chosen = np.asarray(parents, dtype=np.int64) * vocab + np.asarray(tokens, dtype=np.int64)
        pad = beams - len(parents)  # rows left over: copies of the best beam scored -inf
        rows = np.asarray(parents + parents[:1] * pad, dtype=np.int64)
        new = np.asarray(tokens + tokens[:1] * pad, dtype=np.int64)
        self._scores = np.concatenate([joint[chosen], np.full(pad, -np.inf)])
        self._tokens = np.concatenate([self._tokens[rows], new[:, None]], axis=1)
        self._logps = np.concatenate([self._logps[rows], logp[rows, new][:, None]], axis=1)
        self._parents = rows
        return True

    def _end(self, parent: int, token: int, logprob: float, length: int) -> None:
        logps = [*self._logps[parent].tolist(), logprob]
        score = self._normalised(float(self._scores[parent]) + logprob, length)
        ids = [*self._tokens[parent].tolist(), token]
        self._ended.append(Hypothesis(ids, logps, score))
        self._ended.sort(key=lambda h: -h.score)
        del self._ended[self.beams :]

    def _settled(self, length: int) -> bool:
        """True when ``beams`` hypotheses have ended and no live beam scores better."""
        if len(self._ended) < self.beams:
            return False
        return self._normalised(float(self._scores.max()), length) <= self._ended[-1].score

    def _normalised(self, logprob: float, length: int) -> float:
        return logprob / length**self._alpha
