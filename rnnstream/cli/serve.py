"""``rnnstream triton``: a Triton Inference Server model repository serving a model's streams."""

from __future__ import annotations

from pathlib import Path

import click

from rnnstream.cli.options import EXISTING_FILE, count_option


@click.command()
@click.argument("model_path", metavar="MODEL", type=EXISTING_FILE)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Repository folder to write.",
)
@click.option("--name", default=None, help="Model name (default: MODEL's file stem).")
@count_option("--max-sequences", default=1024, help="Sequences held at once.")
@count_option("--max-batch", default=256, help="Steps batched into one call.")
@click.option("--preferred-batch", type=click.IntRange(1), multiple=True, help="Repeatable.")
@count_option("--queue-delay-us", default=1000, minimum=0, help="Wait for a fuller batch.")
@click.option(
    "--idle-seconds",
    type=click.FloatRange(0, min_open=True),
    default=60.0,
    show_default=True,
    help="A sequence with no request for this long is released.",
)
@count_option("--instances", default=1, help="Model instances.")
@click.option("--no-ort", is_flag=True, help="Skip the <name>_ort model (it needs onnx).")
def triton(
    model_path: Path,
    output: Path,
    name: str | None,
    max_sequences: int,
    max_batch: int,
    preferred_batch: tuple[int, ...],
    queue_delay_us: int,
    idle_seconds: float,
    instances: int,
    no_ort: bool,
) -> None:
    """Write a Triton Inference Server model repository serving MODEL's streams.

    <name> runs rnnstream's StreamPool in Triton's python backend; <name>_ort runs a batch-first
    copy in the ONNX Runtime backend, its state kept by Triton. Both use the sequence batcher
    (oldest strategy): --max-sequences at once, --max-batch steps per call. Serve with
    `tritonserver --model-repository OUTPUT`.
    """
    from rnnstream.serve import Batching, write_triton_repository

    batching = Batching(
        max_sequences, max_batch, preferred_batch, queue_delay_us, idle_seconds, instances
    )
    repo = write_triton_repository(model_path, output, name, batching, ort=not no_ort)
    for folder in (repo.python, repo.ort):
        if folder is not None:
            click.echo(f"wrote {folder}")
    if repo.ort_parity is not None:
        click.echo(
            f"{repo.ort.name}: batch-first copy max abs err {repo.ort_parity['max_abs_err']:.3g}"
        )
