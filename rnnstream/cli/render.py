"""How the command line prints results: parity records, export reports, a model's description,
one JSON record per streamed step, and generation's summary. Text for people, JSON on request."""

from __future__ import annotations

import json
from typing import Any

import click
import numpy as np

from rnnstream.runtime.parity_record import MODES, ParityRecord
from rnnstream.runtime.sample import most_likely


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2))


def print_parity(parity: ParityRecord, as_json: bool) -> None:
    """A parity record: the verdict and errors, the task metric, and the errors per mode."""
    if as_json:
        echo_json(parity.to_dict())
        return
    verdict = "PASSED" if parity.passed else "FAILED"
    limits = f"atol {parity.atol:g}" + (f", rtol {parity.rtol:g}" if parity.rtol else "")
    click.echo(
        f"parity {verdict} ({parity.precision} vs {parity.reference}): max abs err "
        f"{parity.max_abs_err:.3g}, max rel err {parity.max_rel_err:.3g} ({limits}); "
        f"{parity.steps} steps x batch {parity.batch}; torch {parity.torch}, "
        f"onnxruntime {parity.onnxruntime}"
    )
    task = parity.task
    if task:
        click.echo(
            f"  {task.metric} on {task.data} validation ({task.tokens} tokens): "
            f"{task.value:.4f} vs {task.reference:.4f} float32, "
            f"+{task.increase:.4f} (max +{task.max_increase:g})"
        )
    for mode in MODES:
        for tensor, err in parity.errors.get(mode, {}).items():
            label = f"chunk (T={parity.chunk_size})" if mode == "chunk" else mode
            click.echo(
                f"  {label:<14} {tensor:<10} max abs {err.max_abs_err:.3g}  "
                f"max rel {err.max_rel_err:.3g}"
            )


def print_report(report: Any, as_json: bool) -> None:
    """An export or quantisation report: the file written and its parity."""
    if as_json:
        echo_json(report.to_dict())
        return
    click.echo(f"wrote {report.path} ({report.size_bytes / 1e6:.2f} MB) in {report.seconds:.1f} s")
    print_parity(report.parity, as_json=False)


def _arg(a: Any) -> dict:
    return {"name": a.name, "type": a.type, "shape": a.shape}


def _axes_line(sig: Any) -> str:
    """The input's batch, time and frame axes, each with how it was decided."""
    decided = sig.source.get("axes")
    if decided is None:  # the file's own signature
        fixed = (sig.input.batch_axis, sig.input.time_axis)
        frames = [
            {"axis": a, "by": "metadata"}
            for a, d in enumerate(sig.input.shape)
            if not isinstance(d, int) and a not in fixed
        ]
        decided = {
            "batch": {"axis": sig.input.batch_axis, "by": "metadata"},
            "time": {"axis": sig.input.time_axis, "by": "metadata"},
            "frame": frames,
        }

    def how(decision: dict) -> str:  # a failed probe's reason is on the probe line
        by = "name, probe failed" if decision["by"].startswith("name (probe") else decision["by"]
        by += f", fixed {decision['size']}" if "size" in decision else ""
        by += f", at least {decision['least']} a run" if "least" in decision else ""
        by += ", outputs the last step's: one step a run" if decision.get("last") else ""
        return by + (", steps mixed: a step is a whole chunk" if decision.get("mixed") else "")

    parts = [
        f"{role} axis {'none' if decided[role]['axis'] is None else decided[role]['axis']} "
        f"({how(decided[role])})"
        for role in ("batch", "time")
    ]
    parts += [f"frame axis {f['axis']} ({how(f)})" for f in decided["frame"]]
    return ", ".join(parts)


def print_info(model_path: str, model: Any, cost: dict | None, as_json: bool) -> None:
    """What ``info`` shows: the graph's inputs and outputs, state pairs, size and parity."""
    sig, session = model.signature, model.session
    if as_json:
        echo_json(
            {
                "signature": sig.to_dict(),
                "cost": cost,
                "inputs": [_arg(a) for a in session.get_inputs()],
                "outputs": [_arg(a) for a in session.get_outputs()],
            }
        )
        return
    origin = "rnnstream signature" if sig.kind != "discovered" else "discovered from the graph"
    block = sig.source.get("quantization", {}).get("block_size")
    precision = f"{sig.precision} (blocks of {block})" if block else sig.precision
    click.echo(
        f"{model_path}: kind {sig.kind} ({origin}), precision {precision}, "
        f"{'streamable' if sig.streamable else 'NOT streamable (whole sequences only)'}"
    )
    for a in session.get_inputs():
        click.echo(f"  input   {a.name}: {a.type} {a.shape}")
    for a in session.get_outputs():
        click.echo(f"  output  {a.name}: {a.type} {a.shape}")
    click.echo(f"  stream input {sig.input.name}: {_axes_line(sig)}")
    if sig.source.get("probe"):
        click.echo(f"  probe   {sig.source['probe']}")
    guessed, paired = sig.source.get("guessed", {}), sig.source.get("paired", {})
    how = {
        "shape": " (paired by shape, a guess: the one output of its dtype and shape; "
        "--state IN=OUT says)",
        "order": " (paired by order: a guess; --state IN=OUT says)",
        "probe": " (paired by a probe: carried, two steps equal one run of two)",
    }
    for s in sig.states:
        guess = how.get(paired.get(s.input, ""), "")
        click.echo(
            f"  state   {s.input} -> {s.output}: {s.dtype} {list(s.shape)}, "
            f"batch axis {s.batch_axis}{guess}"
        )
    for spec in sig.lengths:
        rows = "one per batch row" if spec.shape else "one value"
        click.echo(
            f"  lengths {spec.name}: {spec.dtype} {list(spec.shape)}, filled by the runtime ({rows}"
            f"): the size of axis {spec.counts} of {sig.input.name} (1 per step, T per chunk)"
        )
    for name, value in model.constants.items():
        guess = f" (a guess; --const {name}=... says)" * (name in guessed.get("constants", {}))
        click.echo(f"  const   {name} = {value.tolist()}{guess}")
    if sig.vocab:
        click.echo(f"  vocab   {len(sig.vocab)} characters")
    elif sig.num_tokens and sig.kind == "discovered":
        click.echo(f"  tokens  ids in [0, {sig.num_tokens}) (probe: larger ids are refused)")
    if sig.labels:
        click.echo(f"  labels  {', '.join(sig.labels)}")
    if cost:
        click.echo(
            f"  size    {cost['parameters']:,} parameters, "
            f"{cost['macs_per_step']:,} multiply-adds per step (batch 1)"
        )
    if sig.parity:
        print_parity(sig.parity, as_json=False)


def step_record(t: int, x: Any, y: Any, sig: Any, top: int) -> dict:
    """One streamed step as JSON-ready data: the outputs, or for a model with a vocabulary or
    labels the token read and the ``top`` most likely next tokens (or labels) with probabilities.
    """
    if isinstance(y, dict):
        return {"t": t, **{k: np.round(v, 6).tolist() for k, v in y.items()}}
    if sig.vocab is None and sig.labels is None:
        return {"t": t, "y": np.round(y, 6).tolist()}
    record: dict[str, Any] = {"t": t}
    if sig.vocab is not None:
        record["token"] = sig.vocab[int(x)]
    names, key = (sig.labels, "labels") if sig.labels is not None else (sig.vocab, "next")
    record[key] = [[names[i], round(p, 4)] for i, p in most_likely(y, top)]
    return record


def print_generation_summary(result: Any, prompt: str, beams: int | None, parity: dict | None):
    """Generation's speed and the parity recorded at export, on stderr."""
    timing = result.timing
    unit = "step" if beams else "token"
    speed = "n/a"
    if timing.ms_per_token is not None:
        speed = f"{timing.ms_per_token:.3f} ms/{unit} ({timing.tokens_per_s:.0f} {unit}s/s)"
    click.echo(
        f"{len(result.token_ids)} tokens ({result.strategy}, stopped at {result.finish}, "
        f"log-prob {result.logprob:.2f}): prompt ({len(prompt)} characters, one run) to first "
        f"{unit} {timing.first_token_ms:.2f} ms, then {speed}",
        err=True,
    )
    if parity:
        click.echo(
            f"parity at export: max abs err {parity.max_abs_err:.3g} (atol {parity.atol:g})"
            f" over {parity.steps} steps x batch {parity.batch}",
            err=True,
        )
