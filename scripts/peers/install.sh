#!/usr/bin/env bash
# Install meshgate's pinned test peers into a cache OUTSIDE the clone.
#
#   scripts/peers/install.sh [--force] [peer...]      peers: python telemetrygen (default: all)
#
# Cache dir: ${MESHGATE_PEERS_DIR:-$HOME/.cache/meshgate/peers}
#   venv/                 OpenTelemetry Python SDK + OTLP exporters (pins: scripts/peers/requirements.txt)
#   bin/telemetrygen      telemetrygen from opentelemetry-collector-contrib (pin: TELEMETRYGEN_VERSION below)
#   go/                   GOPATH / GOMODCACHE / GOCACHE used to build the Go peers
#   logs/                 full output of the last install of each peer
#
# Idempotent: a peer whose stamp matches its pin is only verified (fast). A changed pin
# (requirements.txt hash, TELEMETRYGEN_VERSION) re-installs it. Any failure prints the
# reason and exits non-zero. `source scripts/peers/env.sh` afterwards exports the paths.
set -euo pipefail

# ---- pins -------------------------------------------------------------------------------
TELEMETRYGEN_PKG="github.com/open-telemetry/opentelemetry-collector-contrib/cmd/telemetrygen"
TELEMETRYGEN_VERSION="v0.161.0"   # its go.mod needs Go >= 1.26.0
GO_MIN_MINOR=26                   # Go 1.26 or newer (GOTOOLCHAIN=local: no toolchain download)
ALL_PEERS=(python telemetrygen)
# -----------------------------------------------------------------------------------------

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PEERS_DIR="${MESHGATE_PEERS_DIR:-$HOME/.cache/meshgate/peers}"
BOOTSTRAP_PYTHON="${MESHGATE_BOOTSTRAP_PYTHON:-python3}"
FORCE=0

die() {
    echo "install.sh: ERROR: $*" >&2
    exit 1
}
note() { echo "install.sh: $*" >&2; }

# Print the tail of a log and die.
die_with_log() {
    local log="$1"
    shift
    if [[ -f "$log" ]]; then
        echo "----- last 40 lines of $log -----" >&2
        tail -n 40 "$log" >&2 || true
        echo "----- end of $log -----" >&2
    fi
    die "$*"
}

usage() {
    sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

peers=()
for arg in "$@"; do
    case "$arg" in
        -h | --help) usage; exit 0 ;;
        --force) FORCE=1 ;;
        python | telemetrygen) peers+=("$arg") ;;
        *) echo "install.sh: ERROR: unknown peer or option '$arg' (known peers: ${ALL_PEERS[*]})" >&2; exit 2 ;;
    esac
done
if [[ ${#peers[@]} -eq 0 ]]; then
    peers=("${ALL_PEERS[@]}")
fi

# The cache must live outside the clone (nothing of it may be committed or cleaned with it).
PEERS_DIR="$(realpath -m -- "$PEERS_DIR")" || die "cannot resolve peers dir $PEERS_DIR"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd -P)"
case "$PEERS_DIR/" in
    "$REPO_ROOT"/*) die "MESHGATE_PEERS_DIR ($PEERS_DIR) is inside the clone ($REPO_ROOT); point it outside, e.g. \$HOME/.cache/meshgate/peers" ;;
esac
mkdir -p "$PEERS_DIR/logs" "$PEERS_DIR/bin" || die "cannot create peers dir $PEERS_DIR"

# Serialize concurrent installs (tests may run side by side).
if command -v flock >/dev/null 2>&1; then
    exec 9>"$PEERS_DIR/.install.lock"
    flock -w 1800 9 || die "timed out waiting for another install.sh holding $PEERS_DIR/.install.lock"
fi

# ---- python: OpenTelemetry Python SDK venv ------------------------------------------------
python_verify() {
    # Every pinned distribution is installed at exactly its pinned version, and the
    # SDK and both OTLP exporters import.
    "$1" - "$2" <<'PY'
import sys, re
from importlib import metadata
bad = []
for line in open(sys.argv[1], encoding="utf-8"):
    line = line.split("#", 1)[0].strip()
    if not line:
        continue
    m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
    if not m:
        bad.append(f"unsupported requirement line (use name==version): {line!r}")
        continue
    name, want = m.groups()
    try:
        have = metadata.version(name)
    except metadata.PackageNotFoundError:
        bad.append(f"{name}: not installed (want {want})")
        continue
    if have != want:
        bad.append(f"{name}: installed {have}, pinned {want}")
import opentelemetry.sdk.trace, opentelemetry.sdk.metrics, opentelemetry.sdk._logs  # noqa: E401
import opentelemetry.exporter.otlp.proto.grpc.trace_exporter  # noqa: F401
import opentelemetry.exporter.otlp.proto.http.trace_exporter  # noqa: F401
if bad:
    print("\n".join(bad), file=sys.stderr)
    sys.exit(1)
print(metadata.version("opentelemetry-sdk"))
PY
}

install_python() {
    local venv="$PEERS_DIR/venv"
    local py="$venv/bin/python"
    local req="$SCRIPT_DIR/requirements.txt"
    local stamp="$venv/.meshgate-stamp"
    local log="$PEERS_DIR/logs/python.log"
    [[ -f "$req" ]] || die "missing $req"

    command -v "$BOOTSTRAP_PYTHON" >/dev/null 2>&1 \
        || die "peer python: '$BOOTSTRAP_PYTHON' not found (set MESHGATE_BOOTSTRAP_PYTHON to a Python >= 3.9)"
    local pyver want
    pyver="$("$BOOTSTRAP_PYTHON" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')" \
        || die "peer python: '$BOOTSTRAP_PYTHON' does not run"
    want="requirements-sha256=$(sha256sum "$req" | cut -d' ' -f1) python=$pyver"

    local sdkver
    if [[ $FORCE -eq 0 && -x "$py" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        if sdkver="$(python_verify "$py" "$req" 2>"$log.verify")"; then
            echo "peer python: ok ($py, opentelemetry-sdk $sdkver)"
            return 0
        fi
        note "peer python: cached venv failed verification, re-installing:"
        sed 's/^/    /' "$log.verify" >&2
    fi

    note "peer python: installing venv at $venv (log: $log) ..."
    local t0=$SECONDS
    rm -rf "$venv"
    {
        echo "# $(date -u +%FT%TZ) install python peer: $want"
        "$BOOTSTRAP_PYTHON" -m venv "$venv" &&
            "$py" -m pip install --no-input --disable-pip-version-check --require-virtualenv \
                -r "$req"
    } >"$log" 2>&1 || die_with_log "$log" "peer python: venv/pip install failed (see $log)"

    sdkver="$(python_verify "$py" "$req" 2>>"$log")" \
        || die_with_log "$log" "peer python: installed venv does not match $req"
    echo "$want" >"$stamp"
    note "peer python: installed in $((SECONDS - t0))s"
    echo "peer python: ok ($py, opentelemetry-sdk $sdkver)"
}

# ---- telemetrygen: go install, pinned -----------------------------------------------------
go_env() {
    # Everything Go writes goes under $PEERS_DIR/go; run outside any module/workspace.
    env GOPATH="$PEERS_DIR/go" \
        GOMODCACHE="$PEERS_DIR/go/pkg/mod" \
        GOCACHE="$PEERS_DIR/go/build-cache" \
        GOBIN="$PEERS_DIR/bin" \
        GOTOOLCHAIN=local \
        GOWORK=off \
        GOFLAGS=-modcacherw \
        CGO_ENABLED=0 \
        "$@"
}

check_go() {
    command -v go >/dev/null 2>&1 || die "peer telemetrygen: 'go' not found on PATH (need Go 1.$GO_MIN_MINOR or newer)"
    local v
    v="$(go env GOVERSION 2>/dev/null)" || die "peer telemetrygen: 'go env GOVERSION' failed"
    # go1.26.8 -> major 1, minor 26
    local minor="${v#go1.}"
    minor="${minor%%[.a-z]*}"
    [[ "$v" == go1.* && "$minor" =~ ^[0-9]+$ && "$minor" -ge $GO_MIN_MINOR ]] \
        || die "peer telemetrygen: $v is too old, telemetrygen $TELEMETRYGEN_VERSION needs Go 1.$GO_MIN_MINOR or newer"
}

telemetrygen_verify() {
    local bin="$1"
    "$bin" --help >/dev/null 2>&1 || { echo "$bin --help failed" >&2; return 1; }
    # The binary's embedded build info must name the pinned module version.
    if command -v go >/dev/null 2>&1; then
        local info
        info="$(go version -m "$bin" 2>&1)" || { echo "go version -m $bin failed: $info" >&2; return 1; }
        grep -Eq "^[[:space:]]*mod[[:space:]]+${TELEMETRYGEN_PKG//./\\.}[[:space:]]+${TELEMETRYGEN_VERSION//./\\.}([[:space:]]|$)" <<<"$info" \
            || { echo "$bin is not $TELEMETRYGEN_PKG@$TELEMETRYGEN_VERSION:" >&2; echo "$info" | head -3 >&2; return 1; }
    fi
}

install_telemetrygen() {
    local bin="$PEERS_DIR/bin/telemetrygen"
    local stamp="$PEERS_DIR/bin/.telemetrygen.stamp"
    local log="$PEERS_DIR/logs/telemetrygen.log"
    local want="$TELEMETRYGEN_PKG@$TELEMETRYGEN_VERSION"

    if [[ $FORCE -eq 0 && -x "$bin" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        if telemetrygen_verify "$bin" 2>"$log.verify"; then
            echo "peer telemetrygen: ok ($bin, $TELEMETRYGEN_VERSION)"
            return 0
        fi
        note "peer telemetrygen: cached binary failed verification, re-installing:"
        sed 's/^/    /' "$log.verify" >&2
    fi

    check_go
    note "peer telemetrygen: go install $want (log: $log; a cold build takes about a minute) ..."
    local t0=$SECONDS
    rm -f "$bin" "$stamp"
    (
        echo "# $(date -u +%FT%TZ) go install $want with $(go env GOVERSION)"
        cd "$PEERS_DIR" && go_env go install "$want"
    ) >"$log" 2>&1 || die_with_log "$log" "peer telemetrygen: go install $want failed (see $log)"
    [[ -x "$bin" ]] || die_with_log "$log" "peer telemetrygen: go install succeeded but $bin is missing"
    telemetrygen_verify "$bin" 2>>"$log" \
        || die_with_log "$log" "peer telemetrygen: installed binary failed verification"
    echo "$want" >"$stamp"
    note "peer telemetrygen: installed in $((SECONDS - t0))s"
    echo "peer telemetrygen: ok ($bin, $TELEMETRYGEN_VERSION)"
}

for peer in "${peers[@]}"; do
    "install_$peer"
done
