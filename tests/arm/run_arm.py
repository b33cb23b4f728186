"""The ARM suite: runs inside the aarch64 root, with the runtime install only (no torch).

Imports only numpy, onnxruntime and rnnstream (``pip install rnnstream``). ``prepare.py`` writes
the cases on the x86 side (ONNX files, inputs, PyTorch references); ``arm/test.sh`` runs both
(``make test-arm``). For every model: stream it step by step and in chunks, compare the outputs
and final states with the PyTorch reference, then run the command line (``stream`` and
``generate``). Prints a per-model parity table and exits non-zero on any failure.

    python run_arm.py CASES_DIR

Timings under qemu user-mode emulation say nothing about a real ARM CPU, so none are printed.
Not collected by pytest (no ``test_`` prefix): it needs the aarch64 root.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import numpy as np
import onnxruntime

import rnnstream

__all__ = ["max_abs", "stream_model"]


def stream_model(model: rnnstream.Model, x: np.ndarray, chunk: int) -> dict:
    """Stream ``x`` ``[B, T, ...]`` step by step, then (from the zero state) in chunks.

    Returns ``{"step": (y, states), "chunk": (y, states)}`` with ``y`` the primary output as
    ``[B, T, ...]`` and ``states`` the final states by state input name.
    """
    sig = model.signature
    name = sig.outputs[0].name
    batch, steps = x.shape[0], x.shape[1]

    def primary(y: np.ndarray | dict) -> np.ndarray:
        return y[name] if isinstance(y, dict) else y

    stream = model.stream(batch=batch)
    ys = [np.array(primary(stream.step(x[:, t]))) for t in range(steps)]
    runs = {"step": (np.stack(ys, axis=1), stream.state)}
    stream.reset()
    ys = [np.array(primary(stream.feed(x[:, t : t + chunk]))) for t in range(0, steps, chunk)]
    runs["chunk"] = (np.concatenate(ys, axis=1), stream.state)
    return runs


def max_abs(got: np.ndarray, ref: np.ndarray) -> float:
    if got.shape != ref.shape:
        raise AssertionError(f"shape {got.shape} != reference {ref.shape}")
    if not np.all(np.isfinite(got)):
        return float("inf")
    return float(np.max(np.abs(got.astype(np.float64) - ref.astype(np.float64)), initial=0.0))


def errors(got: np.ndarray, ref: np.ndarray, tol: dict) -> tuple[float, float, bool]:
    """Max abs error, max error relative to the reference's largest magnitude, and whether the
    tensor is within ``tol`` (``atol`` absolutely or ``rtol`` relatively, as export measures)."""
    err = max_abs(got, ref)
    rel = err / max(float(np.max(np.abs(ref), initial=0.0)), 1e-30)
    return err, rel, err <= tol["atol"] or rel <= tol.get("rtol", 0.0)


def bits_per_char(logits: np.ndarray, ids: np.ndarray) -> float:
    """Mean bits per character of the next token ids under ``logits`` ``[B, T, V]``."""
    z = logits[:, :-1].astype(np.float64)
    z -= z.max(axis=-1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    picked = np.take_along_axis(log_p, ids[:, 1:, None], axis=-1)
    return float(-picked.mean() / np.log(2))


class Table:
    """The per-model parity table; each row passes, fails or is skipped (with a reason)."""

    COLUMNS: ClassVar[dict[str, str]] = {
        "model": "model",
        "shape": "steps x batch",
        "y_step": "y abs err step",
        "y_chunk": "y abs err chunk",
        "state": "state abs err",
        "rel": "max rel err",
        "tol": "tolerance",
        "x86": "vs x86 ort",
        "result": "result",
    }

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def add(self, name: str, result: str, **cols: object) -> None:
        self.rows.append({"model": name, "result": result, **cols})

    def count(self, result: str) -> int:
        return sum(r["result"] == result for r in self.rows)

    def print(self) -> None:
        head = list(self.COLUMNS.values())
        lines = [[str(r.get(k, "")) for k in self.COLUMNS] for r in self.rows]
        widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(head)]
        print("| " + " | ".join(h.ljust(w) for h, w in zip(head, widths)) + " |")
        print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        for line in lines:
            print("| " + " | ".join(c.ljust(w) for c, w in zip(line, widths)) + " |")
        for r in self.rows:
            if r.get("note"):
                print(f"  {r['model']}: {r['note']}")


def fmt(err: float) -> str:
    return f"{err:.2e}"


def check_model(case: dict, cases: Path, table: Table) -> None:
    name = case["name"]
    if case.get("skip"):
        table.add(name, "SKIPPED", note=case["skip"])
        return
    if case.get("fail"):
        table.add(name, "FAIL", note=case["fail"])
        return
    data = np.load(cases / case["npz"], allow_pickle=False)
    x, y_ref = data["x"], data["y_ref"]
    model = rnnstream.load(cases / case["onnx"], threads=case.get("threads", 1))
    runs = stream_model(model, x, case["chunk"])
    y_errs = {mode: errors(y, y_ref, case["y_tol"]) for mode, (y, _) in runs.items()}
    state_errs = [
        errors(states[s.input], data[f"state__{s.input}"], case["state_tol"])
        for _, states in runs.values()
        for s in model.signature.states
    ]
    everything = [*y_errs.values(), *state_errs]
    x86_err = max(max_abs(runs[m][0], data[f"x86_{m}_y"]) for m in runs)
    ok = all(ok for _, _, ok in everything)
    note = case.get("note", "")
    if "max_bpc_increase" in case and x.dtype.kind == "i":
        ref, got = bits_per_char(y_ref, x), bits_per_char(runs["step"][0], x)
        ok &= got - ref <= case["max_bpc_increase"]
        note += (
            f"; {got:.4f} bits per character vs {ref:.4f} (increase at most "
            f"{case['max_bpc_increase']:g})"
        )
    table.add(
        name,
        "pass" if ok else "FAIL",
        shape=f"{x.shape[1]} x {x.shape[0]}",
        y_step=fmt(y_errs["step"][0]),
        y_chunk=fmt(y_errs["chunk"][0]),
        state=fmt(max(err for err, _, _ in state_errs)),
        rel=fmt(max(rel for _, rel, _ in everything)),
        tol=case["tolerance"],
        x86=fmt(x86_err),
        note=note,
    )


def cli(*args: str, stdin: str = "", entry_point: bool = False) -> subprocess.CompletedProcess:
    """``python -m rnnstream.cli ARGS`` (or the installed ``rnnstream`` script) in this venv."""
    exe = [str(Path(sys.executable).parent / "rnnstream")]
    command = exe if entry_point else [sys.executable, "-m", "rnnstream.cli"]
    done = subprocess.run(
        [*command, *args], input=stdin, capture_output=True, text=True, timeout=600
    )
    if done.returncode != 0:
        raise AssertionError(
            f"{' '.join(command + list(args))} exited {done.returncode}:\n{done.stderr[-2000:]}"
        )
    return done


def check_cli_frames(spec: dict, cases: Path, table: Table) -> None:
    """``stream MODEL -`` on JSON-lines frames from stdin, against the PyTorch reference."""
    data = np.load(cases / spec["npz"], allow_pickle=False)
    steps = spec["steps"]
    x, y_ref = data["x"][0, :steps], data["y_ref"][0, :steps]
    stdin = "".join(json.dumps(frame.tolist()) + "\n" for frame in x)
    errs = {}
    for label, extra, entry in (("step", [], False), ("chunk", ["--chunk", "16"], True)):
        out = cli("stream", str(cases / spec["onnx"]), "-", "--format", "jsonl", *extra,
                  stdin=stdin, entry_point=entry)  # fmt: skip
        records = [json.loads(line) for line in out.stdout.splitlines()]
        if [r["t"] for r in records] != list(range(steps)):
            raise AssertionError(f"stream printed steps {[r['t'] for r in records][:10]}...")
        errs[label] = max_abs(np.array([r["y"] for r in records], dtype=np.float64), y_ref)
    atol = spec["y_tol"]["atol"] + 5e-7  # the command rounds to 6 decimals
    ok = max(errs.values()) <= atol
    table.add(
        f"cli: stream {spec['onnx']} - (jsonl)",
        "pass" if ok else "FAIL",
        shape=f"{steps} x 1",
        y_step=fmt(errs["step"]),
        y_chunk=fmt(errs["chunk"]),
        tol=f"abs {atol:.1e}",
    )


def check_cli_text(spec: dict, cases: Path, table: Table) -> None:
    """``stream MODEL -`` on text from stdin: the same next-character table as on x86.

    Each side's three most likely characters must be among the other side's ten with the same
    probability (printed to 4 decimals), so that near-ties may swap places but nothing else.
    """
    out = cli("stream", str(cases / spec["onnx"]), "-", *spec["args"], stdin=spec["text"])
    got = [json.loads(line) for line in out.stdout.splitlines()]
    want = [json.loads(line) for line in spec["x86_stdout"].splitlines()]
    problems, worst = [], 0.0
    if [r["token"] for r in got] != [r["token"] for r in want]:
        problems.append("the steps' tokens differ")
    for g, w in zip(got, want):
        for a, b in ((g, w), (w, g)):
            top, probs = a["next"][:3], dict(map(tuple, b["next"]))
            for char, p in top:
                if char not in probs:
                    problems.append(f"step {a['t']}: {char!r} missing on the other side")
                    continue
                worst = max(worst, abs(p - probs[char]))
    ok = not problems and worst <= 1.5e-4  # two roundings to 4 decimals
    table.add(
        f"cli: stream {spec['onnx']} - (text)",
        "pass" if ok else "FAIL",
        shape=f"{len(got)} x 1",
        x86=f"{worst:.0e} (p)",
        note="; ".join(problems[:3]),
    )


def check_cli_generate(spec: dict, cases: Path, table: Table) -> None:
    """``rnnstream generate`` greedy: the same text as the x86 run of the same command."""
    args = ["generate", *spec["args"]]
    if spec.get("onnx"):
        args.insert(1, str(cases / spec["onnx"]))
    out = cli(*args, entry_point=True)
    ok = out.stdout == spec["x86_stdout"]
    table.add(
        f"cli: {spec['label']}",
        "pass" if ok else "FAIL",
        shape=f"{spec['tokens']} tokens",
        x86="same text" if ok else "differs",
        note="" if ok else f"aarch64 {out.stdout!r} != x86 {spec['x86_stdout']!r}",
    )


def guarded(check, spec: dict, cases: Path, table: Table, name: str) -> None:
    try:
        check(spec, cases, table)
    except Exception as e:  # a crash is a failed row, and the suite goes on
        table.add(name, "FAIL", note=f"{type(e).__name__}: {e}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", type=Path)
    cases = parser.parse_args().cases
    manifest = json.loads((cases / "manifest.json").read_text())

    machine = platform.machine()
    print(
        f"machine {machine}, Python {platform.python_version()}, numpy {np.__version__}, "
        f"onnxruntime {onnxruntime.__version__}, rnnstream {rnnstream.__version__} "
        f"(from {Path(rnnstream.__file__).parent})"
    )
    if machine != "aarch64":
        print(f"FAILED: platform.machine() is {machine!r}, not 'aarch64'")
        return 1
    if importlib.util.find_spec("torch") is not None:
        print("FAILED: torch is importable here; the ARM suite must run on the runtime install")
        return 1
    print(f"reference: {manifest['reference']}")

    table = Table()
    for case in manifest["models"]:
        guarded(check_model, case, cases, table, case["name"])

    commands = cli("--help").stdout
    for spec in manifest["cli"]:
        kind = spec["kind"]
        command = "generate" if kind == "generate" else "stream"
        name = f"cli: {spec.get('label', command)}"
        if spec.get("skip"):
            table.add(name, "SKIPPED", note=spec["skip"])
        elif f"  {command} " not in commands:
            table.add(name, "SKIPPED", note=f"this rnnstream has no `{command}` command")
        else:
            check = {"frames": check_cli_frames, "text": check_cli_text}.get(
                kind, check_cli_generate
            )
            guarded(check, spec, cases, table, name)

    print()
    table.print()
    print()
    passed, failed, skipped = (table.count(r) for r in ("pass", "FAIL", "SKIPPED"))
    print(f"arm: {passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
