"""The ``info`` command: what a model file holds (works on a runtime-only install)."""

from __future__ import annotations

import click

from rnnstream.cli.loading import load_model
from rnnstream.cli.options import json_flag, state_options
from rnnstream.cli.render import print_info


@click.command()
@click.argument("model_path", metavar="MODEL", type=click.Path(exists=True, dir_okay=False))
@json_flag("Print everything as JSON.")
@state_options
def info(model_path: str, as_json: bool, states: dict, consts: dict, axes: dict) -> None:
    """Show MODEL's inputs, outputs, state pairs, size, compute per step and recorded parity.

    Works on any stateful ONNX model: without rnnstream metadata the state pairs are found from
    names and shapes (or given with --state), and the input's batch, time and frame axes by
    running the model a few times (or given with --axes); each axis shows how it was decided.
    """
    model = load_model(model_path, 1, states, consts, axes)
    print_info(model_path, model, model.signature.cost or _graph_cost(model_path), as_json)


def _graph_cost(model_path: str) -> dict | None:
    """Parameters and multiply-adds from the graph itself, when onnx is installed (weights stored
    as external data, as torch.onnx.export(dynamo=True) writes them, are read from their file)."""
    try:
        import onnx

        from rnnstream.export.graphcost import graph_cost
    except ImportError:
        return None
    return graph_cost(onnx.load(model_path))
