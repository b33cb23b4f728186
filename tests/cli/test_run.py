"""`rnnstream stream | generate | bench` (rnnstream/cli/run.py): the runtime from the shell."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np

import rnnstream
from rnnstream.assets import DEMO_ONNX
from rnnstream.runtime.generate import generate
from tests.tolerances import Closeness, assert_close

PROMPT = "def "
FOUR_DECIMALS = Closeness(ulps=420)  # records round probabilities to 4 decimals: 5e-5 at scale 1


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def test_stream_text_one_json_line_per_character(cli, char_model):
    lines = json_lines(cli("-q", "stream", str(char_model.onnx), "-", input="ab\n").output)
    assert [line["token"] for line in lines] == ["a", "b", "\n"]
    assert all(len(line["next"]) == 3 for line in lines)
    # The streamed predictions are the runtime's own, step by step, with their probabilities.
    model = rnnstream.load(char_model.onnx)
    s = model.stream()
    for line, token in zip(lines, rnnstream.Vocabulary(model.signature.vocab).encode("ab\n")):
        logits = s.step(token).astype(np.float64)
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        best = np.argsort(-probs, kind="stable")[:3]
        assert [name for name, _ in line["next"]] == [model.signature.vocab[i] for i in best]
        assert_close([p for _, p in line["next"]], probs[best], FOUR_DECIMALS)


def test_stream_chunked_and_npy_match_stepping(cli, char_model, frames_model, tmp_path):
    text = "for i in range(3):\n"
    stepped = json_lines(cli("-q", "stream", str(char_model.onnx), "-", input=text).output)
    args = ["-q", "stream", str(char_model.onnx), "-", "--chunk", "7"]
    chunked = json_lines(cli(*args, input=text).output)
    assert [x["token"] for x in chunked] == list(text)
    assert [x["next"][0][0] for x in stepped] == [x["next"][0][0] for x in chunked]
    frames = np.random.default_rng(0).standard_normal((6, 3)).astype(np.float32)
    np.save(tmp_path / "frames.npy", frames)
    args = ["-q", "stream", str(frames_model.onnx), str(tmp_path / "frames.npy")]
    ys = [x["y"] for x in json_lines(cli(*args, "--max-steps", "4").output)]
    assert_close(ys, rnnstream.load(frames_model.onnx).stream().feed(frames)[:4])


def test_stream_frames_json_and_csv(cli, frames_model, tmp_path):
    frames = tmp_path / "frames.txt"
    frames.write_text("[0.1, 0.2, 0.3]\n1,2,3\n\n# a comment\n[0, 0, 0]\n")
    lines = json_lines(cli("-q", "stream", str(frames_model.onnx), str(frames)).output)
    assert [x["t"] for x in lines] == [0, 1, 2]
    s = rnnstream.load(frames_model.onnx).stream()
    expected = [s.step(np.array(f, np.float32)) for f in ([0.1, 0.2, 0.3], [1, 2, 3], [0] * 3)]
    assert_close([x["y"] for x in lines], expected)


def test_stream_bad_frame_is_a_clear_error(cli, frames_model):
    result = cli("-q", "stream", str(frames_model.onnx), "-", input="1,2\n", ok=False)
    assert result.exit_code == 1
    assert "InputError" in result.stderr and "'x'" in result.stderr and "[3]" in result.stderr


# The command line with Ctrl-C handled as in a terminal: a shell starts background jobs (and all
# they start: a CI runner's pytest, then this test's process) with SIGINT ignored, and Python
# keeps a SIGINT it was started ignoring ignored.
WITH_CTRL_C = (
    "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "from rnnstream.cli import main; main()"
)


def test_ctrl_c_ends_the_stream_cleanly(frames_model):
    command = [sys.executable, "-c", WITH_CTRL_C, "-q", "stream", str(frames_model.onnx), "-"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    proc = subprocess.Popen(command, text=True, env=env, **pipes)
    proc.stdin.write("[1, 2, 3]\n")
    proc.stdin.flush()
    first = proc.stdout.readline()  # printed as soon as computed, before more input
    assert '"t": 0' in first
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    # stdin stays open: closing it (as communicate() does) could end the stream at end of input
    # before the interpreter handles the signal, on a loaded machine
    proc.wait(timeout=30)
    err = proc.stderr.read()
    proc.stdin.close()
    assert proc.returncode == 130
    assert "interrupted after 1 steps" in err
    assert "Traceback" not in err


# Runs the command line in an interpreter where importing torch or onnx fails.
RUNTIME_ONLY = (
    "import sys; sys.modules.update(torch=None, onnx=None); from rnnstream.cli import main; main()"
)


def test_streaming_commands_run_without_torch_or_onnx(char_model):
    """A runtime-only install: stream, info and generate need neither torch nor onnx."""

    def run(*args: str, input: str = "") -> subprocess.CompletedProcess:
        command = [sys.executable, "-c", RUNTIME_ONLY, "-q", *args]
        return subprocess.run(command, input=input, capture_output=True, text=True, timeout=120)

    streamed = run("stream", str(char_model.onnx), "-", input="ab")
    assert streamed.returncode == 0, streamed.stderr
    assert [json.loads(x)["token"] for x in streamed.stdout.splitlines()] == ["a", "b"]
    info = run("info", str(char_model.onnx))
    assert info.returncode == 0 and "kind char_lm" in info.stdout
    generated = run("generate", "--max-tokens", "5", "--seed", "0", "--prompt", PROMPT)
    assert generated.returncode == 0 and generated.stdout.startswith(PROMPT)


def test_generate_prints_text_and_speed(cli):
    result = cli("-q", "generate", "--prompt", PROMPT, "--max-tokens", "30", "--seed", "0")
    assert result.stdout.startswith(PROMPT) and result.stdout.endswith("\n")
    again = cli("-q", "generate", "--prompt", PROMPT, "--max-tokens", "30", "--seed", "0")
    assert result.stdout == again.stdout
    assert "ms/token" in result.stderr and "sample" in result.stderr


def test_generate_json_and_beams(cli):
    demo = rnnstream.load(DEMO_ONNX)
    args = ["--prompt", PROMPT, "--max-tokens", "25", "--temperature", "0", "--json"]
    data = json.loads(cli("-q", "generate", str(DEMO_ONNX), *args).stdout)
    greedy = generate(demo, PROMPT, 25, temperature=0)
    assert data["text"] == greedy.text and data["token_ids"] == greedy.token_ids
    assert_close(data["logprobs"], greedy.logprobs)
    assert data["strategy"] == "greedy" and data["finish"] == "max_tokens"
    assert set(data["timing"]) == {
        "tokens",
        "first_token_ms",
        "ms_per_token",
        "tokens_per_s",
        "total_ms",
    }
    beam = generate(demo, PROMPT, 25, beams=3)
    out = cli("-q", "generate", "--prompt", PROMPT, "--max-tokens", "25", "--beams", "3").stdout
    assert out == PROMPT + beam.text + "\n"
    bad = cli("-q", "generate", "--beams", "2", "--top-k", "3", ok=False)
    assert bad.exit_code == 1 and "beam search is deterministic" in bad.stderr


def test_generate_refuses_a_model_without_vocabulary(cli, frames_model):
    result = cli("-q", "generate", str(frames_model.onnx), ok=False)
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: NotALanguageModelError") and "no vocabulary" in (
        result.stderr
    )


def test_bench_json_times_stream_and_pool(cli, frames_model):
    args = ["-q", "bench", str(frames_model.onnx), "--steps", "10", "--rounds", "1", "--json", "-"]
    result = json.loads(cli(*args).stdout)
    assert "stream.step" in json.dumps(result)
