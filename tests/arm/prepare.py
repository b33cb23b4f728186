"""The x86 side of the ARM suite: export the models and compute their PyTorch references.

Needs the export extra (torch). Writes into CASES_DIR: one ONNX file per model, an ``.npz`` with
its input ``x`` (``[batch, time, ...]``), the PyTorch output ``y_ref`` and final states
``state__NAME`` (one full-sequence forward from the zero state) and the x86 onnxruntime stream
outputs, plus ``manifest.json`` which ``run_arm.py`` reads inside the aarch64 root. Models that
are not in the tree (the shipped demo model, an int8 model) get a row that says so.

    python tests/arm/prepare.py CASES_DIR

Not collected by pytest (no ``test_`` prefix); ``make test-arm`` runs it.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import platform
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnxruntime
import torch

import rnnstream
from rnnstream.assets import DEMO_CHECKPOINT, DEMO_ONNX
from rnnstream.export import ParitySettings, export
from rnnstream.export.parity import torch_reference
from rnnstream.export.tolerance import tolerance_for
from rnnstream.models import CharLM, CharLMConfig, RecurrentNet, RecurrentNetConfig, load_checkpoint
from rnnstream.runtime import Vocabulary
from rnnstream.runtime.parity_record import ParityRecord

sys.path.insert(0, str(Path(__file__).parent))
from run_arm import stream_model  # the same streaming code on both sides

STEPS, BATCH, CHUNK = 200, 2, 16
ASSETS = Path(rnnstream.__file__).parent / "assets"

# name -> architecture; every one streams STEPS steps of BATCH sequences.
GENERIC = {
    "lstm": RecurrentNetConfig(cell="lstm", num_layers=2, hidden_size=64, output_size=8),
    "gru": RecurrentNetConfig(cell="gru", num_layers=2, hidden_size=64, output_size=8),
    "rnn_tanh": RecurrentNetConfig(cell="rnn_tanh", num_layers=2, hidden_size=64, output_size=8),
    "rnn_relu": RecurrentNetConfig(cell="rnn_relu", num_layers=2, hidden_size=64, output_size=8),
    "lstm_proj": RecurrentNetConfig(cell="lstm", num_layers=2, hidden_size=64, proj_size=24),
    "gru_time_major": RecurrentNetConfig(
        cell="gru", num_layers=1, hidden_size=48, output_size=8, batch_first=False
    ),
}
CLI_TEXT = "def main():\n    return 42\n"


def python_text(vocab: str, length: int, skip: int) -> str:
    """Real Python source (this file) restricted to the vocabulary, for character models."""
    text = "".join(c for c in Path(__file__).read_text() if c in vocab)
    return (text[skip:] * 2)[:length]


def char_input(sig: rnnstream.Signature) -> np.ndarray:
    """``[BATCH, STEPS]`` token ids: BOS (when the model has one) then Python source."""
    vocab = Vocabulary(sig.vocab)
    rows = []
    for row in range(BATCH):
        ids = vocab.encode(python_text(sig.vocab, STEPS, skip=1500 * row))
        if sig.bos is not None:
            ids = np.concatenate([[sig.bos], ids[:-1]])
        rows.append(ids)
    return np.stack(rows).astype(np.int64)


def to_caller(a: np.ndarray, batch_axis: int | None) -> np.ndarray:
    """A ``[time, batch, ...]`` tensor of a time-major model as ``[batch, time, ...]``."""
    return a.swapaxes(0, 1) if batch_axis == 1 else a


def tolerance(precision: str, parity: ParityRecord | None) -> dict:
    """The project's tolerance for ``precision`` (as the export recorded it): a tensor passes
    within ``atol`` absolutely or ``rtol`` of its largest magnitude."""
    tol = tolerance_for(precision, parity)
    limits = {"atol": tol.atol, "rtol": tol.rtol}
    text = f"abs {tol.atol:g}" + (f" or rel {tol.rtol:g}" if tol.rtol else "")
    result = {"y_tol": limits, "state_tol": limits, "tolerance": text}
    if tol.max_bpc_increase:  # a lower precision of a language model: its bits per character too
        result["max_bpc_increase"] = tol.max_bpc_increase
    return result


def write_case(
    name: str,
    onnx_path: Path,
    x: np.ndarray,
    out: Path,
    module: torch.nn.Module | None,
    tol: dict,
    note: str = "",
) -> dict:
    """Reference outputs for one model: PyTorch's (or x86 onnxruntime's when ``module`` is None).

    ``tol`` gives ``y_tol`` and ``state_tol`` (``{"atol", "rtol"}``) and their ``tolerance`` text.
    """
    model = rnnstream.load(onnx_path)
    sig = model.signature
    x86 = stream_model(model, x, CHUNK)
    if module is not None:
        model_x = torch.from_numpy(to_caller(x, sig.input.batch_axis).copy())
        y_ref, states_ref = torch_reference(module.eval(), model_x)
        y_ref = to_caller(y_ref, sig.outputs[0].batch_axis)
        states = {s.input: ref for s, ref in zip(sig.states, states_ref)}
    else:
        y_ref, states = x86["step"]
    npz = name.replace(" ", "_") + ".npz"
    arrays = {"x": x, "y_ref": y_ref, **{f"state__{k}": v for k, v in states.items()}}
    arrays |= {f"x86_{mode}_y": y for mode, (y, _) in x86.items()}
    np.savez(out / npz, **arrays)
    worst = max(float(np.max(np.abs(y - y_ref))) for y, _ in x86.values())
    print(
        f"  {name}: {onnx_path.name}, x {list(x.shape)}, x86 onnxruntime vs reference {worst:.2e}"
    )
    return {"name": name, "onnx": onnx_path.name, "npz": npz, "chunk": CHUNK, "note": note} | tol


def x86_cli(*args: str, stdin: str = "") -> str:
    """The command's stdout when run here, on x86, with the same runtime."""
    command = [sys.executable, "-m", "rnnstream.cli", *args]
    done = subprocess.run(command, input=stdin, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed on x86:\n{done.stderr}")
    return done.stdout


def generic_models() -> dict[str, tuple[RecurrentNet, np.ndarray]]:
    """The float32 PyTorch models and their inputs ``[BATCH, STEPS, F]``."""
    models = {}
    for seed, (name, config) in enumerate(GENERIC.items()):
        torch.manual_seed(seed)
        x = np.random.default_rng(seed).standard_normal((BATCH, STEPS, config.input_size))
        models[name] = (RecurrentNet(config).eval(), x.astype(np.float32))
    return models


def generic_cases(out: Path, models: dict) -> list[dict]:
    cases = []
    for name, (module, x) in models.items():
        path = out / f"{name}.onnx"
        export(module, path, parity=ParitySettings(steps=STEPS))
        tol = tolerance("float32", rnnstream.load(path).signature.parity)
        cases.append(write_case(name, path, x, out, module, tol))
    threaded = dict(cases[0], name="lstm (threads=4)", threads=4)
    return [cases[0], threaded, *cases[1:]]


def charlm_case(out: Path) -> tuple[dict, list[dict]]:
    torch.manual_seed(10)
    config = CharLMConfig(cell="lstm", num_layers=1, hidden_size=64, embed_size=16)
    module = CharLM(config).eval()
    path = out / "charlm.onnx"
    export(module, path, parity=ParitySettings(steps=STEPS))  # a CharLM describes itself
    sig = rnnstream.load(path).signature
    tol = tolerance("float32", sig.parity)
    case = write_case("charlm", path, char_input(sig), out, module, tol)
    greedy = ["--prompt", "def ", "--max-tokens", "40", "--temperature", "0"]
    cli = [
        {"kind": "text", "onnx": path.name, "text": CLI_TEXT, "args": ["--top", "10"]},
        {"kind": "generate", "label": "generate charlm.onnx (greedy)", "onnx": path.name,
         "args": greedy, "tokens": 40},
    ]  # fmt: skip
    cli[0]["x86_stdout"] = x86_cli("stream", str(path), "-", "--top", "10", stdin=CLI_TEXT)
    cli[1]["x86_stdout"] = x86_cli("generate", str(path), *greedy)
    return case, cli


def demo_module() -> torch.nn.Module | None:
    return load_checkpoint(DEMO_CHECKPOINT).eval() if DEMO_CHECKPOINT.is_file() else None


def float32_source(sig: rnnstream.Signature) -> torch.nn.Module | None:
    """The PyTorch model a shipped lower-precision file was made from, when it is the demo's."""
    quantization = (sig.source or {}).get("quantization") or {}
    digest = quantization.get("float32_sha256")
    if DEMO_ONNX.is_file() and digest == hashlib.sha256(DEMO_ONNX.read_bytes()).hexdigest():
        return demo_module()
    return None


def demo_case(out: Path) -> tuple[list[dict], dict]:
    """The shipped demo model on random token ids (as its export measured parity) and on Python
    source (as it is used: there its cell state reaches the hundreds and its logits 14)."""
    name, label = "demo charlm-stdlib", "generate (shipped demo model, greedy)"
    if not DEMO_ONNX.is_file():
        why = "rnnstream/assets/charlm-stdlib.onnx is not in this tree yet"
        print(f"  {name}: SKIPPED, {why}")
        return [{"name": name, "skip": why}], {"kind": "generate", "label": label, "skip": why}
    path = out / "charlm-stdlib.onnx"
    shutil.copyfile(DEMO_ONNX, path)
    sig = rnnstream.load(path).signature
    module = demo_module()
    note = "" if module else f"{DEMO_CHECKPOINT.name} missing: reference is x86 onnxruntime"
    tol = tolerance(sig.precision, sig.parity)
    ids = np.random.default_rng(0).integers(0, len(sig.vocab), (BATCH, STEPS))
    cases = [
        write_case(f"{name} (random ids)", path, ids, out, module, tol, note),
        write_case(f"{name} (Python text)", path, char_input(sig), out, module, tol, note),
    ]
    greedy = ["--prompt", "def ", "--max-tokens", "60", "--temperature", "0"]
    gen = {"kind": "generate", "label": label, "args": greedy, "tokens": 60}
    gen["x86_stdout"] = x86_cli("generate", *greedy)
    return cases, gen


def lower_precision_cases(out: Path, models: dict) -> list[dict]:
    """int8 and int4 models made by this tree's export, and the lower-precision models in the
    assets.

    Each is compared with the float32 PyTorch model it came from (x86 onnxruntime for a shipped
    file of unknown origin) to the tolerance recorded for its precision: onnxruntime's quantised
    kernels differ between x86 and ARM.
    """
    notes = {
        "int8": "dynamic quantisation, against the float32 PyTorch model",
        "int4": "4-bit MatMulNBits weights, against the float32 PyTorch model",
    }
    cases = []
    # GRU and RNN int8 step with the int8 step path; int4 runs every layer as a Scan
    for precision, name in itertools.product(("int8", "int4"), ("lstm", "gru", "rnn_tanh")):
        module, x = models[name]
        path = out / f"{name}-{precision}.onnx"
        try:
            export(module, path, parity=ParitySettings(steps=STEPS), precision=precision)
        except Exception as e:  # the row fails; the other models still run on ARM
            print(f"  {name} {precision}: FAILED to export on x86: {type(e).__name__}: {e}")
            cases.append({"name": f"{name} {precision}", "fail": f"x86 export failed: {e}"})
            continue
        tol = tolerance(precision, rnnstream.load(path).signature.parity)
        cases.append(write_case(f"{name} {precision}", path, x, out, module, tol, notes[precision]))
    for source in sorted(ASSETS.glob("*.onnx")):
        sig = rnnstream.load(source).signature
        if sig.precision == "float32":
            continue
        path = out / source.name
        shutil.copyfile(source, path)
        if sig.vocab:
            x = char_input(sig)
        else:
            frame = [d for i, d in enumerate(sig.input.shape) if i not in (0, 1)]
            x = np.random.default_rng(0).standard_normal((BATCH, STEPS, *frame), np.float32)
        module = float32_source(sig)
        against = "the float32 PyTorch model" if module is not None else "x86 onnxruntime"
        note = f"shipped {sig.precision} model on Python text, against {against}"
        tol = tolerance(sig.precision, sig.parity)
        cases.append(write_case(source.name, path, x, out, module, tol, note))
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    out = parser.parse_args().out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message="LSTM with projections is not supported with oneDNN")
    print(f"exporting the ARM cases into {out} ({STEPS} steps x batch {BATCH}, chunks of {CHUNK})")
    generic = generic_models()
    models = generic_cases(out, generic)
    charlm, cli = charlm_case(out)
    demo, demo_gen = demo_case(out)
    models += [charlm, *demo, *lower_precision_cases(out, generic)]
    lstm = models[0]
    frames = {"kind": "frames", "onnx": lstm["onnx"], "npz": lstm["npz"], "steps": 50}
    manifest = {
        "reference": (
            f"PyTorch {torch.__version__} on {platform.machine()} (x86 onnxruntime "
            f"{onnxruntime.__version__} for the 'vs x86 ort' column)"
        ),
        "models": models,
        "cli": [frames | {"y_tol": lstm["y_tol"]}, *cli, demo_gen],
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    print(f"wrote {len(list(out.glob('*.onnx')))} ONNX files and {out / 'manifest.json'}")


if __name__ == "__main__":
    main()
