#!/usr/bin/env bash
# `make test-triton`: the Triton model repository on a real tritonserver, with parity and speed.
#
#   1. .triton/venv: its own virtualenv with nvidia-pytriton (its wheel ships tritonserver 2.51
#      with the python backend), tritonclient[grpc,http] and this project's runtime (no torch);
#   2. tests/triton/prepare.py in .venv (torch): export a frame model, `rnnstream triton` for it
#      and for the shipped demo model into .triton/work/repo;
#   3. tests/triton/run_triton.py in .triton/venv: configs parsed with Triton's schema, the _ort
#      copies checked in onnxruntime, tritonserver started on loopback ports, hundreds of
#      concurrent sequences over gRPC checked against solo streams, the table printed; the server
#      is always stopped.
#
# Environment: TRITON_DIR (default .triton), X86_PYTHON (default .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/../.."

TRITON_DIR=${TRITON_DIR:-.triton}
X86_PYTHON=${X86_PYTHON:-.venv/bin/python}
VENV="$TRITON_DIR/venv"
STAMP="$VENV/.installed"

log() { printf '[triton] %s\n' "$*" >&2; }
die() {
	printf '\n[triton] FAILED: %s\n' "$*" >&2
	exit 1
}

[ -x "$X86_PYTHON" ] || die "$X86_PYTHON not found: run make test-triton (it sets up .venv)"
start=$SECONDS
if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ]; then
	log "virtualenv $VENV: nvidia-pytriton, tritonclient[grpc,http], rnnstream (runtime only)"
	rm -rf "$VENV"
	python3 -m venv "$VENV"
	"$VENV/bin/pip" install --disable-pip-version-check -q --progress-bar off \
		nvidia-pytriton 'tritonclient[grpc,http]' -e . >"$TRITON_DIR/pip.log" 2>&1 || {
		tail -n 30 "$TRITON_DIR/pip.log" >&2
		die "pip install failed (log: $TRITON_DIR/pip.log)"
	}
	touch "$STAMP"
fi
log "setup took $((SECONDS - start)) s"

WORK="$TRITON_DIR/work"
rm -rf "$WORK"
mkdir -p "$WORK"
log "repository: exporting a frame model, rnnstream triton for it and the demo model"
"$X86_PYTHON" -m tests.triton.prepare "$WORK" || die "writing the repository failed"
"$VENV/bin/python" -m tests.triton.run_triton "$WORK" || die "the Triton checks failed (see above)"
log "done in $((SECONDS - start)) s"
