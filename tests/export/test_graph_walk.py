"""The graph walkers reach every subgraph: an ``If`` nested in a ``Loop`` body, both branches."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from rnnstream.export.graph_walk import all_graphs, all_nodes, read_names, subgraphs


def _branch(name: str, op: str) -> onnx.GraphProto:
    """``op(x, outer_w)``: a branch that reads two tensors of the outer graph by name."""
    out = helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT, [2])
    return helper.make_graph(
        [helper.make_node(op, ["x", "outer_w"], [f"{name}_y"], name=f"{name}_{op}")],
        name,
        [],
        [out],
    )


def _nested_model() -> onnx.ModelProto:
    """``y = x`` carried through a Loop of ``n`` iterations, each adding or multiplying by ``w``
    depending on ``flag``, the choice an ``If`` inside the body."""
    iif = helper.make_node(
        "If",
        ["flag"],
        ["chosen"],
        then_branch=_branch("then", "Add"),
        else_branch=_branch("else", "Mul"),
        name="choose",
    )
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"], name="keep_going"),
            helper.make_node("Identity", ["carried"], ["x"], name="name_x"),
            iif,
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("carried", TensorProto.FLOAT, [2]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("chosen", TensorProto.FLOAT, [2]),
        ],
    )
    loop = helper.make_node("Loop", ["n", "", "start"], ["y"], body=body, name="loop")
    graph = helper.make_graph(
        [loop],
        "nested",
        [
            helper.make_tensor_value_info("n", TensorProto.INT64, []),
            helper.make_tensor_value_info("flag", TensorProto.BOOL, []),
            helper.make_tensor_value_info("start", TensorProto.FLOAT, [2]),
            helper.make_tensor_value_info("outer_w", TensorProto.FLOAT, [2]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return model


def test_walkers_reach_a_branch_nested_in_a_loop_body() -> None:
    model = _nested_model()
    # the graph is real: onnxruntime runs it (3 iterations adding w)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    start, w = np.array([1.0, 2.0], np.float32), np.array([0.5, -1.0], np.float32)
    feeds = {"n": np.array(3), "flag": np.array(True), "start": start, "outer_w": w}
    np.testing.assert_array_equal(session.run(None, feeds)[0], start + 3 * w)

    loop = model.graph.node[0]
    assert [g.name for g in subgraphs(loop)] == ["body"]
    # depth first, in attribute order (onnx.helper stores attributes sorted by name)
    assert [g.name for g in all_graphs(model.graph)] == ["nested", "body", "else", "then"]
    assert [n.name for n in all_nodes(model.graph)] == [
        "loop",
        "keep_going",
        "name_x",
        "choose",
        "else_Mul",
        "then_Add",
    ]
    # the Loop reads its own inputs and, through its body and the If's branches, the outer w
    assert {"n", "start", "outer_w", "flag", "carried", "cond_in", "x"} <= read_names(loop)
    assert read_names(model.graph.node[0].attribute[0].g.node[0]) == {"cond_in"}
