"""Triton python-backend model over an rnnstream StreamPool (written as ``model.py``).

``rnnstream triton`` copies this file next to ``model.onnx`` in the model's version folder. It
runs inside Triton's python backend, which provides ``triton_python_backend_utils``; rnnstream
must be installed in the Python environment the backend uses. The logic lives in
:class:`rnnstream.serve.sequences.PooledSequences`; this file only converts requests and
responses.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

import rnnstream
from rnnstream.serve.sequences import PooledSequences, StepRequest


class TritonPythonModel:
    """One model instance: one StreamPool holding the sequences Triton routes to it."""

    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        path = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        idle_us = int(config["sequence_batching"]["max_sequence_idle_microseconds"])
        model = rnnstream.load(path)
        self.input_name = model.signature.input.name
        self.sequences = PooledSequences(model, idle_seconds=idle_us / 1e6)

    def execute(self, requests: list) -> list:
        steps = [
            StepRequest(
                sequence_id=int(_tensor(request, "CORRID").reshape(-1)[0]),
                start=bool(_tensor(request, "START").any()),
                end=bool(_tensor(request, "END").any()),
                frame=_tensor(request, self.input_name),
            )
            for request in requests
        ]
        responses = []
        for result in self.sequences.execute(steps):
            if isinstance(result, Exception):
                error = pb_utils.TritonError(f"{type(result).__name__}: {result}")
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=error))
            else:
                tensors = [pb_utils.Tensor(name, y) for name, y in result.items()]
                responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses


def _tensor(request: object, name: str) -> np.ndarray:
    return pb_utils.get_input_tensor_by_name(request, name).as_numpy()
