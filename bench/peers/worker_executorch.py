"""Peers worker: ExecuTorch with the XNNPACK delegate, the reference module exported with
``torch.export`` and lowered by ``to_edge_transform_and_lower`` with ``XnnpackPartitioner``,
loaded with ``executorch.runtime`` and stepped with ``Method.execute`` (state carried as the
output tensors). XNNPACK's thread pool (two threads by default) is reset to ``threads``. int8:
XNNPACK's dynamic quantisation (``XNNPACKQuantizer``, symmetric per-channel int8 weights,
activations quantised per call) through PT2E ``prepare_pt2e``/``convert_pt2e``: it takes linear
layers only, so the ``nn.LSTM``/``nn.GRU`` weights stay float32 (the head alone is int8), and again
on the cells rewritten with ``nn.Linear`` (``reference.LinearCellsStepNet``), all weights int8."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
    XNNPACKQuantizer,
    get_symmetric_quantization_config,
)
from executorch.exir import to_edge_transform_and_lower
from executorch.extension.pybindings.portable_lib import (
    _threadpool_get_thread_count,
    _unsafe_reset_threadpool,
)
from executorch.runtime import Runtime
from executorch.version import __version__ as executorch_version
from protocol import Job, Method, Reference, attempt, serve
from reference import example_inputs, step_net, zero_state
from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e


def lowered(reference: Reference, int8: bool, linear_cells: bool, path: Path) -> str:
    """The step module as an XNNPACK-delegated ``.pte`` at ``path``; what it holds, in words."""
    net, example = step_net(reference, linear_cells), example_inputs(reference)
    if int8:
        quantizer = XNNPACKQuantizer().set_global(
            get_symmetric_quantization_config(is_per_channel=True, is_dynamic=True)
        )
        prepared = prepare_pt2e(torch.export.export(net, example).module(), quantizer)
        prepared(*example)
        net = convert_pt2e(prepared)
        linears = [n for n in net.graph.nodes if "linear" in str(n.target)]
        quantised = [n for n in linears if "dequantize" in str(n.args[1].target)]
        weights = f"int8 weights on {len(quantised)} of {len(linears)} linear ops; "
    else:
        weights = ""
    program = to_edge_transform_and_lower(
        torch.export.export(net, example), partitioner=[XnnpackPartitioner()]
    ).to_executorch()
    path.write_bytes(program.buffer)
    return weights + _delegation(program)


def _delegation(program) -> str:
    """How many of the program's operators XNNPACK took, and which stayed outside it."""
    graph = program.exported_program().graph
    calls = [n for n in graph.nodes if n.op == "call_function"]
    delegated = sum("executorch_call_delegate" in str(n.target) for n in calls)
    left = sorted(
        {getattr(n.target, "__name__", str(n.target)) for n in calls} - {"executorch_call_delegate"}
    )
    return f"{delegated} XNNPACK delegate call(s); outside it: {', '.join(left) or 'nothing'}"


def xnnpack_method(
    method: Method, reference: Reference, linear_cells: bool, folder: Path
) -> Method:
    def build():
        form = "-linear-cells" if linear_cells else ""
        path = folder / f"executorch-{method.cell}-{method.precision}{form}.pte"
        method.detail = lowered(reference, method.precision == "int8", linear_cells, path)
        program = Runtime.get().load_program(path)

        def start():
            loaded = program.load_method("forward")
            state = list(zero_state(reference))

            def step(frame: np.ndarray) -> np.ndarray:
                nonlocal state
                y, *state = loaded.execute([torch.from_numpy(frame).view(1, -1), *state])
                return y.numpy()

            return step

        return start

    return attempt(method, build)


def main() -> None:
    job = Job.from_argv()
    torch.set_num_threads(job.threads)
    _unsafe_reset_threadpool(job.threads)
    if _threadpool_get_thread_count() != job.threads:
        raise SystemExit(f"XNNPACK kept {_threadpool_get_thread_count()} threads")
    version = executorch_version.split("+")[0]
    methods = {}
    variants = (
        ("float32", False, "f32"),
        ("int8", False, "dynamic int8 (XNNPACKQuantizer; it leaves nn.LSTM/GRU f32)"),
        ("int8", True, "dynamic int8, cells rewritten with nn.Linear (all weights int8)"),
    )
    for cell, reference in job.references.items():
        for precision, linear_cells, tag in variants:
            label = f"ExecuTorch {version} XNNPACK, {job.threads} thread, `execute`, {tag}"
            key = f"executorch-{precision}{'-linear-cells' if linear_cells else ''}-{cell}"
            methods[key] = xnnpack_method(
                Method(label, cell, precision), reference, linear_cells, job.folder
            )
    serve(job, methods)


if __name__ == "__main__":
    main()
