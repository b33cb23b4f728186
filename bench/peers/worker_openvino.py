"""Peers worker: OpenVINO on the CPU, the reference module converted with ``ov.convert_model``
(static shapes) and made stateful (the state lives in the infer request, zeroed by
``reset_state``), compiled with float32 inference explicitly (on CPUs with bf16 the default is
bf16), ``threads`` threads, latency hint, one stream, threads not pinned (pinned threads wait on
a CPU shared with other work). Stepped two ways: the frame written into the request's own input
tensor and ``infer()`` (its fast path), and ``infer({0: frame})`` (its convenient API). int8:
the weights compressed by NNCF (``nncf.compress_weights``, INT8_ASYM), which takes MatMul weights
only (the head; the LSTMSequence/GRUSequence weights stay float32, see ``detail``), and again on
the cells rewritten with ``nn.Linear`` (``reference.LinearCellsStepNet``), all weights int8."""

from __future__ import annotations

import numpy as np
import openvino as ov
from openvino.passes import MakeStateful, Manager
from protocol import Job, Method, Reference, attempt, serve
from reference import example_inputs, step_net


def stateful_model(reference: Reference, int8: bool, linear_cells: bool) -> tuple[ov.Model, str]:
    """The converted step model with its state pairs made internal, and what was quantised."""
    example = example_inputs(reference)
    shapes = [tuple(t.shape) for t in example]  # static: OpenVINO allocates the tensors once
    net = step_net(reference, linear_cells)
    model = ov.convert_model(net, example_input=example, input=shapes)
    detail = "float32 weights"
    if int8:
        import nncf

        before = _weight_types(model)
        model = nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_ASYM)
        after = _weight_types(model)
        detail = f"weight elements by type: {before} -> {after}"
    pairs = list(zip(model.get_parameters()[1:], model.get_results()[1:]))
    manager = Manager()
    manager.register_pass(MakeStateful(pairs))
    manager.run_passes(model)
    return model, detail


def _weight_types(model: ov.Model) -> dict[str, int]:
    """Elements of the model's constants (>= 256 elements) by element type."""
    counts: dict[str, int] = {}
    for op in model.get_ordered_ops():
        if op.get_type_name() == "Constant":
            shape = op.get_output_partial_shape(0).to_shape()
            size = int(np.prod(shape)) if len(shape) else 1
            if size >= 256:
                kind = op.get_output_element_type(0).get_type_name()
                counts[kind] = counts.get(kind, 0) + size
    return counts


def compiled(core: ov.Core, model: ov.Model, threads: int) -> ov.CompiledModel:
    config = {
        "INFERENCE_PRECISION_HINT": "f32",
        "INFERENCE_NUM_THREADS": threads,
        "NUM_STREAMS": 1,
        "PERFORMANCE_HINT": "LATENCY",
        "ENABLE_CPU_PINNING": False,  # pinned threads wait on a CPU shared with other work
    }
    result = core.compile_model(model, "CPU", config)
    precision = str(result.get_property("INFERENCE_PRECISION_HINT"))
    if "32" not in precision:
        raise RuntimeError(f"OpenVINO compiled at {precision}, not f32")
    return result


def request_tensors(model: ov.CompiledModel):
    """The fast path: the frame copied into the request's own input tensor, ``infer()``."""

    def start():
        request = model.create_infer_request()
        request.reset_state()
        x = request.get_input_tensor(0).data
        y = request.get_output_tensor(0).data

        def step(frame: np.ndarray) -> np.ndarray:
            x[0] = frame
            request.infer()
            return y.copy()

        return step

    return start


def infer_dict(model: ov.CompiledModel):
    """The convenient API: ``request.infer({0: frame})`` and the output taken from its result."""

    def start():
        request = model.create_infer_request()
        request.reset_state()
        return lambda frame: request.infer({0: frame[None]})[0][0]

    return start


def openvino_method(
    method: Method, core: ov.Core, reference: Reference, threads: int, linear_cells: bool, path
) -> Method:
    """``method`` stepping its own compiled model through ``path`` (request_tensors/infer_dict)."""

    def build():
        int8 = method.precision == "int8"
        graph, method.detail = stateful_model(reference, int8, linear_cells)
        return path(compiled(core, graph, threads))

    return attempt(method, build)


VARIANTS = (  # key, precision, cells rewritten with nn.Linear, step path, label
    ("request-float32", "float32", False, request_tensors, "request tensors, f32"),
    ("dict-float32", "float32", False, infer_dict, "`infer(dict)`, f32"),
    (
        "request-int8",
        "int8",
        False,
        request_tensors,
        "request tensors, int8 weights (NNCF; it leaves LSTM/GRU sequence ops f32)",
    ),
    (
        "request-int8-linear-cells",
        "int8",
        True,
        request_tensors,
        "request tensors, int8 weights, cells rewritten with nn.Linear (all weights int8)",
    ),
)


def main() -> None:
    job = Job.from_argv()
    core = ov.Core()
    version = ov.get_version().split("-")[0]
    methods = {}
    for cell, reference in job.references.items():
        for key, precision, linear_cells, path, how in VARIANTS:
            method = Method(f"OpenVINO {version} stateful, {how}", cell, precision)
            methods[f"openvino-{key}-{cell}"] = openvino_method(
                method, core, reference, job.threads, linear_cells, path
            )
    serve(job, methods)


if __name__ == "__main__":
    main()
