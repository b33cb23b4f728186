"""Peers worker: rnnstream's ``Stream.step`` on the orchestrator's exports (float32 and int8), in
a process of its own that imports the runtime only (no torch)."""

from __future__ import annotations

from pathlib import Path

from protocol import Job, Method, attempt, serve

import rnnstream


def stream_step(path: str, cell: str, precision: str, threads: int) -> Method:
    def build():
        model = rnnstream.load(path, threads=threads)
        return lambda: model.stream().step

    label = f"rnnstream {rnnstream.__version__} `Stream.step` {precision}"
    return attempt(Method(label, cell, precision, detail=Path(path).name), build)


def main() -> None:
    job = Job.from_argv()
    methods = {}
    for cell, files in job.onnx.items():
        for precision, path in files.items():
            methods[f"rnnstream-{precision}-{cell}"] = stream_step(
                path, cell, precision, job.threads
            )
    serve(job, methods)


if __name__ == "__main__":
    main()
