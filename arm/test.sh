#!/usr/bin/env bash
# `make test-arm`: the torch-free runtime on aarch64 (qemu user-mode emulation), with parity.
#
#   1. arm/root.sh: the cached aarch64 Debian root with a venv (built once, under .arm/);
#   2. a wheel of this tree, built here, installed there with its core dependencies only
#      (numpy, onnxruntime, click: aarch64 wheels from PyPI), as `pip install rnnstream` would;
#   3. tests/arm/prepare.py here (x86, torch): export the models, PyTorch references;
#   4. tests/arm/run_arm.py there (aarch64, no torch): stream, compare, run the CLI, print the
#      per-model parity table; its exit status is this script's.
#
# Needs root. Environment: ARM_DIR (default .arm), X86_PYTHON (default .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."

export ARM_DIR=${ARM_DIR:-.arm}
ROOT="$ARM_DIR/root"
X86_PYTHON=${X86_PYTHON:-.venv/bin/python}
VENV=/opt/venv # inside the root; made by arm/root.sh
CA=/etc/ssl/host-ca.pem # inside the root; copied by arm/root.sh

log() { printf '[arm] %s\n' "$*" >&2; }
die() {
	printf '\n[arm] FAILED: %s\n' "$*" >&2
	exit 1
}
in_root() {
	env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/root LANG=C.UTF-8 LC_ALL=C.UTF-8 \
		/usr/sbin/chroot "$ROOT" "$@"
}
pip_install() {
	in_root "$VENV/bin/python" -m pip --disable-pip-version-check --no-input install \
		--cert "$CA" --root-user-action=ignore --progress-bar off -q "$@"
}

[ -x "$X86_PYTHON" ] || die "$X86_PYTHON not found: run make test-arm (it sets up .venv)"
start=$SECONDS
bash arm/root.sh

log "wheel: building rnnstream from this tree"
rm -rf "$ARM_DIR/src" "$ARM_DIR/dist"
mkdir -p "$ARM_DIR/src"
tar --exclude=__pycache__ -cf - pyproject.toml README.md rnnstream | tar -xf - -C "$ARM_DIR/src"
"$X86_PYTHON" -m pip wheel --disable-pip-version-check --no-deps -w "$ARM_DIR/dist" \
	"$ARM_DIR/src" >"$ARM_DIR/wheel.log" 2>&1 || {
	tail -n 30 "$ARM_DIR/wheel.log" >&2
	die "building the wheel failed (log: $ARM_DIR/wheel.log)"
}
wheel=$(cd "$ARM_DIR/dist" && ls rnnstream-*.whl)

rm -rf "$ROOT/work"
mkdir -p "$ROOT/work/dist"
cp "$ARM_DIR/dist/$wheel" "$ROOT/work/dist/"
log "wheel: pip install $wheel inside the root (core dependencies from PyPI, aarch64 wheels)"
# The wheel itself, always (its version does not change when the code does), then its
# dependencies as pip resolves them from its metadata (nothing to do once they are there).
pip_install --force-reinstall --no-deps "/work/dist/$wheel" ||
	die "pip install --force-reinstall --no-deps $wheel failed inside the root"
pip_install "/work/dist/$wheel" || {
	log "wheel: pip install failed; retrying once"
	pip_install "/work/dist/$wheel" || die "pip install $wheel failed inside the root"
}
in_root "$VENV/bin/python" -m pip --disable-pip-version-check check >&2 ||
	die "pip check failed inside the root"
in_root "$VENV/bin/python" -m pip --disable-pip-version-check list 2>/dev/null |
	grep -iE '^(numpy|onnxruntime|click|rnnstream|torch) ' | sed 's/^/[arm]   /' >&2

log "cases: exporting models and PyTorch references on $(uname -m)"
"$X86_PYTHON" tests/arm/prepare.py "$ROOT/work/cases" || die "tests/arm/prepare.py failed"
cp tests/arm/run_arm.py "$ROOT/work/"

log "suite: tests/arm/run_arm.py inside the aarch64 root (no /proc, no /sys: see arm/root.sh)"
status=0
in_root "$VENV/bin/python" /work/run_arm.py /work/cases 2>"$ARM_DIR/run_arm.stderr" |
	tee "$ARM_DIR/last-run.txt" || status=$?
if [ "$status" -ne 0 ]; then
	sed 's/^/[aarch64 stderr] /' "$ARM_DIR/run_arm.stderr" | tail -n 40 >&2
	die "the ARM suite failed (exit $status); table above, stderr in $ARM_DIR/run_arm.stderr"
fi
log "ARM suite passed in $((SECONDS - start)) s of wall time (emulated: not a performance figure)"
