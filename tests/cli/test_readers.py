"""Property tests of the stream command's readers (rnnstream/cli/readers.py): whatever bytes,
lines or arrays come in, the readers give well-formed steps or an InputError, nothing else."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from rnnstream.cli import main
from rnnstream.cli.readers import read_characters, read_frames, read_npy, stack
from rnnstream.errors import InputError

# Derandomized: the same examples on every run and machine (the suite must not flake); fixtures
# are module-scoped files, reused by every example.
SETTINGS = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def text_of(data: bytes) -> io.TextIOWrapper:
    """``data`` as the command reads stdin: UTF-8 text, strict."""
    return io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", errors="strict")


# Bytes that are mostly frames: numbers, separators, brackets, and now and then anything.
FRAME_BYTES = st.lists(
    st.one_of(
        st.sampled_from([b"1", b"-2.5", b"1e999", b"nan", b",", b"[", b"]", b"\n", b" ", b"#"]),
        st.binary(max_size=3),
    ),
    max_size=40,
).map(b"".join)


@SETTINGS
@given(st.binary(max_size=200))
def test_characters_are_the_decoded_text_or_an_input_error(data):
    try:
        chars = list(read_characters(text_of(data)))
    except InputError as e:
        assert "not UTF-8" in str(e)
        with pytest.raises(UnicodeDecodeError):
            text_of(data).read()
    else:
        assert "".join(chars) == text_of(data).read()


@SETTINGS
@given(FRAME_BYTES, st.sampled_from(["auto", "jsonl", "csv"]))
def test_frames_are_finite_float32_or_an_input_error(data, fmt):
    try:
        frames = list(read_frames(text_of(data), fmt))
    except InputError:
        return
    for frame in frames:
        assert frame.dtype == np.float32 and np.isfinite(frame).all()


@SETTINGS
@given(
    st.lists(
        st.lists(
            st.floats(allow_nan=False, allow_infinity=False, width=32), min_size=1, max_size=4
        ),
        max_size=6,
    )
)
def test_csv_lines_of_numbers_read_back_exactly(rows):
    text = "".join(",".join(repr(v) for v in row) + "\n" for row in rows)
    frames = list(read_frames(text_of(text.encode()), "csv"))
    assert len(frames) == len(rows)
    for frame, row in zip(frames, rows):
        np.testing.assert_array_equal(frame, np.asarray(row, dtype=np.float32))


ARRAYS = hnp.arrays(
    dtype=st.one_of(
        hnp.floating_dtypes(),
        hnp.integer_dtypes(),
        hnp.boolean_dtypes(),
        hnp.complex_number_dtypes(),
        hnp.unicode_string_dtypes(max_len=3),
    ),
    shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4),
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("npy")


@settings(SETTINGS, max_examples=150)
@given(ARRAYS)
def test_npy_arrays_are_steps_or_an_input_error(folder, array):
    path = folder / "array.npy"
    np.save(path, array)
    try:
        steps = read_npy(path)
    except InputError as e:
        assert array.ndim == 0 or "float32's range" in str(e)
        return
    assert steps.ndim >= 1
    np.testing.assert_array_equal(steps, array)


@settings(SETTINGS, max_examples=100)
@given(st.binary(max_size=300))
def test_random_bytes_as_npy_are_an_input_error_or_an_array(folder, data):
    path = folder / "bytes.npy"
    path.write_bytes(b"\x93NUMPY" + data if data[:1] == b"\x01" else data)
    try:
        steps = read_npy(path)
    except InputError:
        return
    assert isinstance(steps, np.ndarray) and steps.ndim >= 1


SHAPES = hnp.array_shapes(min_dims=0, max_dims=2, max_side=3)


@SETTINGS
@given(st.lists(SHAPES, min_size=1, max_size=5), st.integers(0, 1000))
def test_a_chunk_stacks_steps_of_one_shape_or_is_an_input_error(shapes, first):
    chunk = [np.zeros(shape, dtype=np.float32) for shape in shapes]
    try:
        stacked = stack(chunk, first)
    except InputError as e:
        assert len(set(shapes)) > 1 and f"steps {first}-{first + len(chunk) - 1}" in str(e)
        return
    assert stacked.shape == (len(chunk), *shapes[0])


@settings(SETTINGS, max_examples=40)
@given(FRAME_BYTES, st.sampled_from(["1", "3"]))
def test_the_stream_command_on_random_input_succeeds_or_fails_in_one_line(
    frames_model, data, chunk
):
    args = ["-q", "stream", str(frames_model.onnx), "-", "--chunk", chunk]
    result = CliRunner().invoke(main, args, input=data)
    if result.exit_code == 0:
        assert result.stderr == ""
        return
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("Error: InputError: ")
    assert "internal error" not in result.stderr


def test_the_stream_command_reads_every_frame_of_a_well_formed_input(frames_model):
    """The property above is not vacuous: well-formed input streams, one line per frame."""
    lines = ["1,2,3", "[0.5, -1, 2]", "# comment", "", "4, 5, 6"]
    args = ["-q", "stream", str(frames_model.onnx), "-", "--chunk", "2"]
    result = CliRunner().invoke(main, args, input="\n".join(lines) + "\n")
    assert result.exit_code == 0 and len(result.stdout.splitlines()) == 3
