#!/usr/bin/env bash
# Build, once, an aarch64 Debian root with a Python venv, cached under .arm/ (git-ignored).
#
#   bash arm/root.sh            # idempotent: each step is skipped when already done
#   bash arm/root.sh --check    # only check that this machine can run aarch64 binaries
#
# Needs root (apt-get, binfmt_misc, debootstrap, chroot). On an x86_64 host the aarch64 binaries
# run under qemu user-mode emulation (Debian's qemu-user-static, registered with binfmt_misc).
# Installs the Debian packages it needs when they are missing. Any step that cannot be done
# fails with a message saying why: nothing is skipped silently.
#
# Environment: ARM_DIR (default .arm), ARM_MIRROR (default: the Debian mirror the host's apt
# sources name), ARM_SUITE (default bookworm).
#
# Never mount both /proc and /sys into the root: onnxruntime's CPU detection then reads the
# host's x86 /proc/cpuinfo and crashes under qemu 7.2. With neither mounted it warns and runs.
set -euo pipefail
cd "$(dirname "$0")/.."

ARM_DIR=${ARM_DIR:-.arm}
ROOT="$ARM_DIR/root"
SUITE=${ARM_SUITE:-bookworm}
VENV=/opt/venv # inside the root
CA=/etc/ssl/host-ca.pem # inside the root: the host's CA bundle, for pip --cert
PACKAGES=(debootstrap qemu-user-static binfmt-support)

log() { printf '[arm] %s\n' "$*" >&2; }
die() {
	printf '\n[arm] FAILED: %s\n' "$*" >&2
	exit 1
}

# Run a command inside the root with a clean environment (no host pip/proxy settings leak in).
in_root() {
	env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/root LANG=C.UTF-8 LC_ALL=C.UTF-8 \
		/usr/sbin/chroot "$ROOT" "$@"
}

require_root_user() {
	[ "$(id -u)" = 0 ] || die "must run as root (apt-get, binfmt_misc, debootstrap, chroot); try sudo"
}

install_packages() {
	local missing=()
	command -v debootstrap >/dev/null || missing+=(debootstrap)
	command -v qemu-aarch64-static >/dev/null || missing+=(qemu-user-static)
	command -v update-binfmts >/dev/null || missing+=(binfmt-support)
	if [ ${#missing[@]} -eq 0 ]; then
		log "host packages: ${PACKAGES[*]} present"
		return
	fi
	command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them (needs a Debian host)"
	log "host packages: installing ${missing[*]} with apt-get"
	DEBIAN_FRONTEND=noninteractive apt-get update -qq || die "apt-get update failed"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
		>/dev/null || die "apt-get install ${missing[*]} failed"
}

# Make the kernel hand aarch64 ELF files to qemu-aarch64-static (flag F: the interpreter is opened
# now, so it need not exist inside the root).
enable_binfmt() {
	local dir=/proc/sys/fs/binfmt_misc entry=/proc/sys/fs/binfmt_misc/qemu-aarch64
	if [ ! -e "$dir/status" ]; then
		log "binfmt_misc: mounting $dir"
		mount -t binfmt_misc binfmt_misc "$dir" 2>/dev/null ||
			die "cannot mount binfmt_misc at $dir: this machine (or container) does not allow" \
				"user-mode emulation of aarch64 binaries, so the ARM suite cannot run here"
	fi
	if [ ! -e "$entry" ]; then
		log "binfmt_misc: enabling qemu-aarch64"
		update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
	fi
	[ -e "$entry" ] || die "qemu-aarch64 is not registered in $dir (update-binfmts --enable" \
		"qemu-aarch64 failed); aarch64 binaries cannot run on this machine"
	grep -qx enabled "$entry" || die "binfmt entry $entry exists but is disabled"
	grep -q '^flags:.*F' "$entry" || die "binfmt entry $entry lacks the F (fix-binary) flag," \
		"so qemu would have to exist inside the root; re-register it from qemu-user-static"
	log "binfmt_misc: qemu-aarch64 enabled ($(sed -n 's/^interpreter //p' "$entry"))"
}

# The Debian mirror the host's apt sources name (deb822 .sources or one-line format).
host_mirror() {
	python3 - "$SUITE" <<'EOF'
import glob, re, sys
suite = sys.argv[1]
for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    for stanza in open(path).read().split("\n\n"):
        fields = dict(
            re.match(r"(\S+):\s*(.*)", line).groups()
            for line in stanza.splitlines()
            if re.match(r"\S+:", line)
        )
        if fields.get("Enabled", "yes") == "no" or "deb" not in fields.get("Types", "").split():
            continue
        if suite in fields.get("Suites", "").split():
            print(fields["URIs"].split()[0])
            sys.exit()
for path in ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*.list"))]:
    try:
        lines = open(path).read().splitlines()
    except OSError:
        continue
    for line in lines:
        m = re.match(r"deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)", line)
        if m and m.group(2) == suite:
            print(m.group(1))
            sys.exit()
print("http://deb.debian.org/debian")
EOF
}

# Unmount anything left mounted under a folder (an interrupted debootstrap mounts proc and sys).
unmount_under() {
	local target
	[ -d "$1" ] || return 0
	{ findmnt -rn -o TARGET | grep -F "$(realpath "$1")/" || true; } | sort -r |
		while read -r target; do
			umount -l "$target" || true
		done
}

build_root() {
	if [ -f "$ROOT/.rnnstream-root-complete" ]; then
		log "root: $ROOT exists (cached; rm -rf $ROOT or make clean-arm to rebuild)"
		return
	fi
	local mirror partial="$ROOT.partial"
	mirror=${ARM_MIRROR:-$(host_mirror)}
	unmount_under "$partial"
	rm -rf --one-file-system "$partial" "$ROOT"
	mkdir -p "$ARM_DIR"
	local attempt
	for attempt in 1 2; do
		log "root: debootstrap --arch=arm64 --variant=minbase $SUITE from $mirror" \
			"(a few minutes; attempt $attempt)"
		if debootstrap --arch=arm64 --variant=minbase --include=python3,python3-venv,python3-pip \
			"$SUITE" "$partial" "$mirror" >"$ARM_DIR/debootstrap.log" 2>&1; then
			break
		fi
		unmount_under "$partial"
		tail -n 20 "$ARM_DIR/debootstrap.log" >&2
		[ "$attempt" = 1 ] || die "debootstrap failed twice (full log: $ARM_DIR/debootstrap.log)"
		rm -rf --one-file-system "$partial"
	done
	unmount_under "$partial"
	touch "$partial/.rnnstream-root-complete"
	mv "$partial" "$ROOT"
	log "root: built ($(du -sh --one-file-system "$ROOT" | cut -f1))"
}

check_root_runs() {
	local machine
	machine=$(in_root /usr/bin/uname -m 2>&1) || die "cannot run the root's aarch64 binaries: $machine"
	[ "$machine" = aarch64 ] || die "the root reports machine '$machine', expected aarch64"
	log "root: runs, uname -m = $machine"
}

build_venv() {
	install -D -m 644 /etc/ssl/certs/ca-certificates.crt "$ROOT$CA"
	if [ -x "$ROOT$VENV/bin/python" ]; then
		log "venv: $VENV exists in the root (cached)"
		return
	fi
	log "venv: python3 -m venv $VENV inside the root"
	in_root /usr/bin/python3 -m venv "$VENV" || die "python3 -m venv failed inside the root"
	log "venv: $(in_root "$VENV/bin/python" --version)"
}

require_root_user
install_packages
if [ "$(uname -m)" != aarch64 ]; then
	enable_binfmt
fi
if [ "${1:-}" = --check ]; then
	exit 0
fi
build_root
check_root_runs
build_venv
log "root ready: $ROOT (python venv $VENV inside)"
