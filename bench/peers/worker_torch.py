"""Peers worker: PyTorch eager stepping the reference module (state carried as tensors), with
oneDNN on and off (which is faster depends on the CPU), on ``threads`` threads."""

from __future__ import annotations

import numpy as np
import torch
from protocol import Job, Method, Reference, serve
from reference import StepNet, zero_state


def eager(reference: Reference, mkldnn: bool) -> Method:
    net = StepNet(reference)

    def start():
        state = zero_state(reference)

        def step(frame: np.ndarray) -> np.ndarray:
            nonlocal state
            x = torch.from_numpy(frame).view(1, -1)
            with torch.backends.mkldnn.flags(enabled=mkldnn), torch.inference_mode():
                y, *state = net(x, *state)
            return y.numpy()

        return step

    label = f"PyTorch {torch.__version__} eager (oneDNN {'on' if mkldnn else 'off'})"
    return Method(label, reference.cell, "float32", start)


def main() -> None:
    job = Job.from_argv()
    torch.set_num_threads(job.threads)
    methods = {}
    for cell, reference in job.references.items():
        for mkldnn in (True, False):
            methods[f"torch-eager-onednn-{'on' if mkldnn else 'off'}-{cell}"] = eager(
                reference, mkldnn
            )
    serve(job, methods)


if __name__ == "__main__":
    main()
