"""Per-step latency of a streamed model, every way side by side (see rnnstream.bench).

    python bench/step_latency.py [MODEL.onnx --against CHECKPOINT] [--json out.json]

Without MODEL it builds the reference model of the runtime issue (2-layer LSTM, input 64,
hidden 256, head 256->64), exports it and compares with PyTorch eager as well.
"""

from rnnstream.cli import main

if __name__ == "__main__":
    main(["bench", *__import__("sys").argv[1:]])
