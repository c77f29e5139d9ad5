#!/usr/bin/env bash
# Install meshgate's pinned test peers into a cache OUTSIDE the clone.
#
#   scripts/peers/install.sh [--force] [peer...]
#       peers: python telemetrygen jaeger opensearch elasticsearch prometheus nginx
#              helm kustomize kubeconform kubeschemas chromium chromium-driver (default: all)
#
# Cache dir: ${MESHGATE_PEERS_DIR:-$HOME/.cache/meshgate/peers}
#   venv/                 OpenTelemetry Python SDK + OTLP exporters, pyarrow, duckdb (pins: scripts/peers/requirements.txt)
#   bin/telemetrygen      telemetrygen from opentelemetry-collector-contrib (pin: TELEMETRYGEN_VERSION below)
#   bin/jaeger            Jaeger v2 all-in-one, built from the pinned Jaeger Go module (JAEGER_VERSION)
#   opensearch-<v>/       OpenSearch integ-test distribution (no JDK, no plugins); `opensearch` -> it
#   elasticsearch-<v>/    Elasticsearch integ-test distribution (no JDK); `elasticsearch` -> it
#   go/                   GOPATH / GOMODCACHE / GOCACHE used to build the Go peers
#   m2/                   Maven local repository the two zips are fetched into (by mvn, checksum-pinned)
#   bin/helm, bin/kustomize, bin/kubeconform
#                         the manifest checkers of tests/deploy.rs, built from their pinned Go modules
#   kube-schemas/         offline schemas for `kubeconform -strict`: Kubernetes (pinned kubernetes-validate
#                         wheel from PyPI) and Istio's CRDs (pinned istio.io/api module), converted by
#                         scripts/peers/kube_schemas.py, whose venv/ (pinned PyYAML) the tests also use
#   logs/                 full output of the last install of each peer
# prometheus, nginx, chromium and chromium-driver are the exceptions: Debian packages (pins:
# PROMETHEUS_DEB_VERSION, NGINX_DEB_VERSION, CHROMIUM_DEB_VERSION), installed system-wide with
# apt-get (as root, or via `sudo -n`) into /usr/bin/prometheus, /usr/sbin/nginx, /usr/bin/chromium
# and /usr/bin/chromedriver; the system services of the first two are kept from starting (see
# install_debian_peer).
#
# Idempotent: a peer whose stamp matches its pin is only verified (fast). A changed pin
# (requirements.txt hash, a *_VERSION below) re-installs it. Any failure prints the
# reason and exits non-zero. `source scripts/peers/env.sh` afterwards exports the paths;
# scripts/peers/services.sh starts the server peers (jaeger, opensearch, elasticsearch, prometheus).
set -euo pipefail

# ---- pins -------------------------------------------------------------------------------
TELEMETRYGEN_PKG="github.com/open-telemetry/opentelemetry-collector-contrib/cmd/telemetrygen"
TELEMETRYGEN_VERSION="v0.161.0"   # its go.mod needs Go >= 1.26.0
GO_MIN_MINOR=26                   # Go 1.26 or newer (GOTOOLCHAIN=local: no toolchain download)
# Jaeger's Go module is tagged on the v1.x line; v1.76.0 is the same release as Jaeger v2.13.0,
# whose cmd/jaeger is the v2 (OpenTelemetry-collector based) all-in-one binary.
JAEGER_MODULE="github.com/jaegertracing/jaeger"
JAEGER_VERSION="v1.76.0"
JAEGER_V2_VERSION="v2.13.0"       # stamped into the binary (`jaeger version` prints it)
# No-JDK test distributions from Maven Central, fetched with mvn (its configured repository).
# The newest served 2.19.x / 8.x when pinned; the sha512 is Maven Central's .sha512 of the zip.
OPENSEARCH_VERSION="2.19.6"
OPENSEARCH_ARTIFACT="org.opensearch.distribution.integ-test-zip:opensearch:${OPENSEARCH_VERSION}:zip"
OPENSEARCH_SHA512="8adbfaa13162b8d42b388ece6b39bfb7f1a349ab9c128d4eced78ba1dd43b5a10850b43b8aac19fa5ab11f4d5c355ddf6f6617514d6112b0936a1903005d1d36"
ELASTICSEARCH_VERSION="8.19.21"   # runs on Java 21+ only (services.sh picks the newer JDK)
ELASTICSEARCH_ARTIFACT="org.elasticsearch.distribution.integ-test-zip:elasticsearch:${ELASTICSEARCH_VERSION}:zip"
ELASTICSEARCH_SHA512="cf6b0a93860d329937ae7f913ec5073b0c726c77639764b93fc83a304aa1dd9d4defcfa2849948eea3b0b47c2065f994908603939fc2a4774c9c4d868c5ec1dd"
MAVEN_DEPENDENCY_PLUGIN="org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
# Prometheus 2.42 from Debian 12 (bookworm), the version `apt-cache policy prometheus` offered.
PROMETHEUS_DEB_VERSION="2.42.0+ds-5+deb12u1"
# nginx 1.22 from Debian 12, the load balancer of tests/scale_e2e.rs.
NGINX_VERSION="1.22.1"
NGINX_DEB_VERSION="1.22.1-9+deb12u11"
PROMETHEUS_VERSION="2.42.0"       # what `prometheus --version` prints
# Headless Chromium and its WebDriver server from Debian 12 (bookworm-security), the version
# `apt-cache policy chromium chromium-driver` offered: the browser of tests/service_map_e2e.rs
# and benches/service_map.rs. Both packages come from one source package and must match.
CHROMIUM_VERSION="156.0.8078.108"  # what `chromium --version` / `chromedriver --version` print
CHROMIUM_DEB_VERSION="156.0.8078.108-1~deb12u1"
# Manifest checkers for deploy/ (tests/deploy.rs), `go install`ed from the Go module proxy.
# kustomize v5.8.3 needs Go 1.27; v5.8.2 is the newest that builds with Go 1.26.
HELM_MODULE="helm.sh/helm/v3"
HELM_VERSION="v3.22.0"
# What helm's release build stamps in from its go.mod (k8s.io/client-go v0.37.0): the Kubernetes
# version `helm template` and `helm lint` assume when not given --kube-version.
HELM_K8S_VERSION_MINOR="37"
KUSTOMIZE_MODULE="sigs.k8s.io/kustomize/kustomize/v5"
KUSTOMIZE_VERSION="v5.8.2"
KUBECONFORM_MODULE="github.com/yannh/kubeconform"
KUBECONFORM_VERSION="v0.8.0"
# kubeconform's schemas, offline (it would fetch them from GitHub): the Kubernetes API schemas
# inside the kubernetes-validate wheel (PyPI; sha256 of the wheel pinned), for the oldest
# Kubernetes the manifests support and the newest the wheel has, plus the CRDs of Istio's API
# module (checked against the Go checksum database like any module). PyYAML reads the CRDs.
KUBE_SCHEMAS_WHEEL="kubernetes-validate==1.37.0"
KUBE_SCHEMAS_WHEEL_SHA256="85136d018a27b50ec7fc049d902bfa5193f5976807e6c0f408e3ab6fe078cad9"
KUBE_SCHEMAS_K8S_VERSIONS=(1.30.0 1.37.0)
ISTIO_API_MODULE="istio.io/api"
ISTIO_API_VERSION="v1.32.0"
PYYAML_VERSION="6.0.3"
ALL_PEERS=(python telemetrygen jaeger opensearch elasticsearch prometheus nginx helm kustomize kubeconform kubeschemas chromium chromium-driver)
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
    sed -n '2,30p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

peers=()
for arg in "$@"; do
    case "$arg" in
        -h | --help) usage; exit 0 ;;
        --force) FORCE=1 ;;
        python | telemetrygen | jaeger | opensearch | elasticsearch | prometheus | nginx | helm | kustomize | kubeconform | kubeschemas | chromium | chromium-driver) peers+=("$arg") ;;
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
    # SDK, both OTLP exporters, both Zipkin clients, pyarrow (with its parquet module) and duckdb import.
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
import py_zipkin.zipkin, py_zipkin.encoding.protobuf  # noqa: E401,F401
import opentelemetry.exporter.zipkin.json  # noqa: F401
import pyarrow, pyarrow.parquet, duckdb  # noqa: E401,F401  (the Parquet readers)
if bad:
    print("\n".join(bad), file=sys.stderr)
    sys.exit(1)
print(", ".join(f"{d} {metadata.version(d)}" for d in ("opentelemetry-sdk", "pyarrow", "duckdb")))
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
            echo "peer python: ok ($py, $sdkver)"
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
    echo "peer python: ok ($py, $sdkver)"
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
    local peer="${1:-telemetrygen}"
    command -v go >/dev/null 2>&1 || die "peer $peer: 'go' not found on PATH (need Go 1.$GO_MIN_MINOR or newer)"
    local v
    v="$(go env GOVERSION 2>/dev/null)" || die "peer $peer: 'go env GOVERSION' failed"
    # go1.26.8 -> major 1, minor 26
    local minor="${v#go1.}"
    minor="${minor%%[.a-z]*}"
    [[ "$v" == go1.* && "$minor" =~ ^[0-9]+$ && "$minor" -ge $GO_MIN_MINOR ]] \
        || die "peer $peer: $v is too old, the Go peers need Go 1.$GO_MIN_MINOR or newer"
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

    check_go telemetrygen
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

# ---- jaeger: Jaeger v2 all-in-one, built from the pinned module -------------------------
# `go install github.com/jaegertracing/jaeger/cmd/jaeger@v1.76.0` is refused by the go command
# because Jaeger's go.mod has a `replace` directive, so: download the pinned module into our
# GOMODCACHE (checked against the Go checksum database like any module) and `go build` its
# cmd/jaeger package with the module as the main module, honouring its go.sum.
jaeger_verify() {
    local bin="$1" out
    out="$("$bin" version 2>&1)" || { echo "$bin version failed: $out" >&2; return 1; }
    grep -q "\"gitVersion\": *\"$JAEGER_V2_VERSION\"" <<<"$out" \
        || { echo "$bin is not Jaeger $JAEGER_V2_VERSION: $out" >&2; return 1; }
    if command -v go >/dev/null 2>&1; then
        local info
        info="$(go version -m "$bin" 2>&1)" || { echo "go version -m $bin failed: $info" >&2; return 1; }
        grep -Eq "^[[:space:]]*path[[:space:]]+${JAEGER_MODULE//./\\.}/cmd/jaeger([[:space:]]|$)" <<<"$info" \
            || { echo "$bin was not built from $JAEGER_MODULE/cmd/jaeger:" >&2; echo "$info" | head -3 >&2; return 1; }
    fi
}

install_jaeger() {
    local bin="$PEERS_DIR/bin/jaeger"
    local stamp="$PEERS_DIR/bin/.jaeger.stamp"
    local log="$PEERS_DIR/logs/jaeger.log"
    local want="$JAEGER_MODULE/cmd/jaeger@$JAEGER_VERSION ($JAEGER_V2_VERSION)"

    if [[ $FORCE -eq 0 && -x "$bin" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        if jaeger_verify "$bin" 2>"$log.verify"; then
            echo "peer jaeger: ok ($bin, $JAEGER_V2_VERSION = module $JAEGER_VERSION)"
            return 0
        fi
        note "peer jaeger: cached binary failed verification, re-installing:"
        sed 's/^/    /' "$log.verify" >&2
    fi

    check_go jaeger
    note "peer jaeger: building $want (log: $log; a cold build takes several minutes) ..."
    local t0=$SECONDS
    rm -f "$bin" "$bin.tmp" "$stamp"
    (
        set -euo pipefail
        echo "# $(date -u +%FT%TZ) build $want with $(go env GOVERSION)"
        cd "$PEERS_DIR"
        moddir="$(go_env go mod download -json "$JAEGER_MODULE@$JAEGER_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')"
        [[ -n "$moddir" && -f "$moddir/go.mod" ]] || { echo "go mod download gave no module directory" >&2; exit 1; }
        echo "# module source: $moddir"
        go_env go build -C "$moddir" -trimpath \
            -ldflags "-s -w -X $JAEGER_MODULE/internal/version.latestVersion=$JAEGER_V2_VERSION" \
            -o "$bin.tmp" ./cmd/jaeger
        mv -f "$bin.tmp" "$bin"
    ) >"$log" 2>&1 || die_with_log "$log" "peer jaeger: building $want failed (see $log)"
    [[ -x "$bin" ]] || die_with_log "$log" "peer jaeger: build succeeded but $bin is missing"
    jaeger_verify "$bin" 2>>"$log" || die_with_log "$log" "peer jaeger: built binary failed verification"
    echo "$want" >"$stamp"
    note "peer jaeger: installed in $((SECONDS - t0))s"
    echo "peer jaeger: ok ($bin, $JAEGER_V2_VERSION = module $JAEGER_VERSION)"
}

# ---- opensearch / elasticsearch: no-JDK integ-test zips from Maven Central ---------------
# Fetched by mvn (maven-dependency-plugin, pinned) into $PEERS_DIR/m2 with strict checksums,
# checked against the pinned sha512, unpacked to $PEERS_DIR/<name>-<version>, and the
# version-free symlink $PEERS_DIR/<name> pointed at it (what env.sh and services.sh use).
zip_dist_verify() {
    local home="$1" name="$2" version="$3"
    [[ -x "$home/bin/$name" ]] || { echo "$home/bin/$name missing or not executable" >&2; return 1; }
    compgen -G "$home/lib/$name-$version.jar" >/dev/null \
        || { echo "$home/lib/$name-$version.jar missing (not a $name $version distribution?)" >&2; return 1; }
}

install_zip_dist() {
    local name="$1" version="$2" artifact="$3" sha512="$4"
    local home="$PEERS_DIR/$name-$version"
    local stamp="$home/.meshgate-stamp"
    local log="$PEERS_DIR/logs/$name.log"
    local want="$artifact sha512=$sha512"

    if [[ $FORCE -eq 0 && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        if zip_dist_verify "$home" "$name" "$version" 2>"$log.verify"; then
            ln -sfn "$name-$version" "$PEERS_DIR/$name"
            echo "peer $name: ok ($home)"
            return 0
        fi
        note "peer $name: cached distribution failed verification, re-installing:"
        sed 's/^/    /' "$log.verify" >&2
    fi

    command -v mvn >/dev/null 2>&1 || die "peer $name: 'mvn' not found on PATH (apt-get install maven)"
    command -v unzip >/dev/null 2>&1 || die "peer $name: 'unzip' not found on PATH (apt-get install unzip)"
    note "peer $name: fetching $artifact with mvn (log: $log) ..."
    local t0=$SECONDS
    local repo="$PEERS_DIR/m2"
    local g a v p
    IFS=: read -r g a v p <<<"$artifact"
    local zip="$repo/${g//.//}/$a/$v/$a-$v.$p"
    local tmp="$PEERS_DIR/.unpack-$name-$version.$$"
    rm -rf "$home" "$tmp"
    {
        echo "# $(date -u +%FT%TZ) fetch $artifact with $(mvn -v 2>/dev/null | head -1)"
        mvn -B -ntp -C -Dstyle.color=never -Dmaven.repo.local="$repo" \
            "$MAVEN_DEPENDENCY_PLUGIN:get" -Dartifact="$artifact" -Dtransitive=false
    } >"$log" 2>&1 || die_with_log "$log" "peer $name: mvn could not fetch $artifact (see $log)"
    [[ -f "$zip" ]] || die_with_log "$log" "peer $name: mvn succeeded but $zip is missing"
    local got
    got="$(sha512sum "$zip" | cut -d' ' -f1)"
    if [[ "$got" != "$sha512" ]]; then
        rm -f "$zip"
        die "peer $name: $zip has sha512 $got, pinned $sha512 (deleted; re-run to fetch again)"
    fi
    mkdir -p "$tmp"
    unzip -q "$zip" -d "$tmp" >>"$log" 2>&1 || { rm -rf "$tmp"; die_with_log "$log" "peer $name: unzip $zip failed"; }
    [[ -d "$tmp/$name-$version" ]] || { rm -rf "$tmp"; die "peer $name: $zip has no top-level $name-$version/ directory"; }
    mv "$tmp/$name-$version" "$home"
    rm -rf "$tmp"
    zip_dist_verify "$home" "$name" "$version" 2>>"$log" \
        || die_with_log "$log" "peer $name: unpacked distribution failed verification"
    echo "$want" >"$stamp"
    ln -sfn "$name-$version" "$PEERS_DIR/$name"
    note "peer $name: installed in $((SECONDS - t0))s"
    echo "peer $name: ok ($home)"
}

install_opensearch() {
    install_zip_dist opensearch "$OPENSEARCH_VERSION" "$OPENSEARCH_ARTIFACT" "$OPENSEARCH_SHA512"
}

install_elasticsearch() {
    install_zip_dist elasticsearch "$ELASTICSEARCH_VERSION" "$ELASTICSEARCH_ARTIFACT" "$ELASTICSEARCH_SHA512"
}

# ---- prometheus: Debian package, pinned ---------------------------------------------------
# `apt-get install prometheus=<pin>` (no recommends: no node exporter). The package's postinst
# registers a system service (sysvinit script + systemd unit) and asks invoke-rc.d /
# deb-systemd-invoke to start it on :9090. Both consult /usr/sbin/policy-rc.d, so for the
# duration of the apt-get call a policy-rc.d that answers 101 ("do not run") is put in place
# (the machine's own one, if any, is moved aside and restored afterwards; container images often
# ship exactly such a file already). Afterwards the service is disabled at boot too (systemctl
# disable, or update-rc.d disable without systemd) and, should one be running anyway, stopped.
# The tests never use that service: services.sh runs its own prometheus on a free port.
prometheus_verify() {
    local have out
    have="$(dpkg-query -W -f='${db:Status-Status} ${Version}' prometheus 2>/dev/null)" \
        || { echo "Debian package prometheus is not installed" >&2; return 1; }
    [[ "$have" == "installed $PROMETHEUS_DEB_VERSION" ]] \
        || { echo "Debian package prometheus: '$have', pinned $PROMETHEUS_DEB_VERSION" >&2; return 1; }
    [[ -x /usr/bin/prometheus ]] || { echo "/usr/bin/prometheus missing" >&2; return 1; }
    out="$(/usr/bin/prometheus --version 2>&1)" || { echo "prometheus --version failed: $out" >&2; return 1; }
    grep -Eq "^prometheus, version ${PROMETHEUS_VERSION//./\\.}([+ ]|$)" <<<"$out" \
        || { echo "prometheus --version is not $PROMETHEUS_VERSION: $(head -1 <<<"$out")" >&2; return 1; }
}

# Keep a packaged system service off (prometheus would hold :9090 and scrape itself, nginx :80).
debian_service_off() {
    local service="$1"
    shift
    local -a as_root=("$@")
    if [[ -d /run/systemd/system ]]; then
        "${as_root[@]}" systemctl disable --now "$service.service" || return 1
    else
        if command -v systemctl >/dev/null 2>&1; then
            "${as_root[@]}" systemctl disable "$service.service" >/dev/null 2>&1 || true
        fi
        if command -v update-rc.d >/dev/null 2>&1 && [[ -x /etc/init.d/$service ]]; then
            "${as_root[@]}" update-rc.d "$service" disable >/dev/null 2>&1 || true
            if "${as_root[@]}" "/etc/init.d/$service" status >/dev/null 2>&1; then
                "${as_root[@]}" "/etc/init.d/$service" stop || return 1
            fi
        fi
    fi
}

# install_debian_peer NAME PACKAGE DEB_VERSION OK_LINE [SERVICE]: the pinned Debian package,
# installed with apt-get (as root or via `sudo -n`) with service starts denied and the packaged
# service SERVICE (default NAME; "" for a package without one) disabled afterwards;
# `<NAME>_verify` (a function) decides whether it is already right.
install_debian_peer() {
    local name="$1" pkg="$2" debver="$3" okline="$4" service="${5-$1}"
    local log="$PEERS_DIR/logs/$name.log"
    local want="$pkg=$debver"

    if [[ $FORCE -eq 0 ]] && "${name}_verify" 2>"$log.verify"; then
        echo "peer $name: ok ($okline)"
        return 0
    fi
    if command -v dpkg-query >/dev/null 2>&1 && dpkg-query -W "$pkg" >/dev/null 2>&1; then
        note "peer $name: installed package does not match the pin, re-installing:"
        sed 's/^/    /' "$log.verify" >&2
    fi

    command -v apt-get >/dev/null 2>&1 || die "peer $name: 'apt-get' not found (needs a Debian 12 system: Debian package $want)"
    local -a as_root=()
    if [[ $EUID -ne 0 ]]; then
        { command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; } \
            || die "peer $name: installing the Debian package needs root (or password-less sudo): run 'apt-get install -y --no-install-recommends $want' as root, then re-run"
        as_root=(sudo -n)
    fi
    note "peer $name: apt-get install $want (log: $log) ..."
    local t0=$SECONDS
    : >"$log"
    echo "# $(date -u +%FT%TZ) apt-get install $want" >>"$log"
    # Is the pinned version known to apt? If not, refresh the package lists once.
    if ! apt-cache show "$want" >/dev/null 2>&1; then
        "${as_root[@]}" apt-get update >>"$log" 2>&1 || die_with_log "$log" "peer $name: apt-get update failed"
        apt-cache show "$want" >/dev/null 2>&1 \
            || die_with_log "$log" "peer $name: Debian package $want is not available (apt-cache policy $pkg: $(apt-cache policy "$pkg" 2>/dev/null | sed -n 's/^ *Candidate: //p'))"
    fi

    # Deny service starts during the install (see above); restore the machine's policy after.
    local policy=/usr/sbin/policy-rc.d saved="" ours
    ours="$(mktemp)"
    printf '#!/bin/sh\n# meshgate install.sh: no service starts during apt-get install\nexit 101\n' >"$ours"
    chmod 755 "$ours"
    if [[ -e "$policy" ]]; then
        saved="$policy.meshgate-saved.$$"
        "${as_root[@]}" mv -f "$policy" "$saved" || die "peer $name: cannot move $policy aside"
    fi
    restore_policy() {
        "${as_root[@]}" rm -f "$policy"
        if [[ -n "$saved" ]]; then "${as_root[@]}" mv -f "$saved" "$policy"; fi
    }
    # Restored even when interrupted.
    trap 'restore_policy; exit 130' INT TERM
    trap 'restore_policy' EXIT
    if ! "${as_root[@]}" cp "$ours" "$policy"; then
        rm -f "$ours"
        die "peer $name: cannot write $policy"
    fi
    rm -f "$ours"
    local rc=0 reinstall=()
    [[ $FORCE -eq 1 ]] && reinstall=(--reinstall)
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        --allow-downgrades "${reinstall[@]}" "$want" >>"$log" 2>&1 || rc=$?
    restore_policy
    trap - INT TERM EXIT
    [[ $rc -eq 0 ]] || die_with_log "$log" "peer $name: apt-get install $want failed (exit $rc; see $log)"
    if [[ -n "$service" ]]; then
        debian_service_off "$service" "${as_root[@]}" >>"$log" 2>&1 \
            || die_with_log "$log" "peer $name: could not stop/disable the packaged $service service"
    fi
    "${name}_verify" 2>>"$log" || die_with_log "$log" "peer $name: installed package failed verification"
    note "peer $name: installed in $((SECONDS - t0))s"
    echo "peer $name: ok ($okline)"
}

install_prometheus() {
    install_debian_peer prometheus prometheus "$PROMETHEUS_DEB_VERSION" \
        "/usr/bin/prometheus, $PROMETHEUS_VERSION = Debian $PROMETHEUS_DEB_VERSION"
}

# ---- nginx: Debian package, pinned ---------------------------------------------------------
# The real load balancer of tests/scale_e2e.rs (OTLP/gRPC via grpc_pass, OTLP/HTTP via
# proxy_pass in front of three gateways). The tests run their own nginx with its own prefix on
# free loopback ports; the packaged service (port 80) is kept off.
nginx_verify() {
    local have
    have="$(dpkg-query -W -f='${db:Status-Status} ${Version}' nginx 2>/dev/null)" \
        || { echo "Debian package nginx is not installed" >&2; return 1; }
    [[ "$have" == "installed $NGINX_DEB_VERSION" ]] \
        || { echo "Debian package nginx: '$have', pinned $NGINX_DEB_VERSION" >&2; return 1; }
    [[ -x /usr/sbin/nginx ]] || { echo "/usr/sbin/nginx missing" >&2; return 1; }
    local out
    out="$(/usr/sbin/nginx -v 2>&1)" || { echo "nginx -v failed: $out" >&2; return 1; }
    grep -Fq "nginx/$NGINX_VERSION" <<<"$out" || { echo "nginx -v is not $NGINX_VERSION: $out" >&2; return 1; }
}

install_nginx() {
    install_debian_peer nginx nginx "$NGINX_DEB_VERSION" \
        "/usr/sbin/nginx, $NGINX_VERSION = Debian $NGINX_DEB_VERSION"
}

# ---- chromium / chromium-driver: Debian packages, pinned -----------------------------------
# The headless browser of the service map test and benchmark, driven over W3C WebDriver by
# chromedriver. No system service. chromium-driver depends on chromium of the same version, so
# installing it pinned also pins the browser; each peer verifies its own package and binary.
chromium_deb_verify() {
    local pkg="$1" bin="$2" prefix="$3" have out
    have="$(dpkg-query -W -f='${db:Status-Status} ${Version}' "$pkg" 2>/dev/null)" \
        || { echo "Debian package $pkg is not installed" >&2; return 1; }
    [[ "$have" == "installed $CHROMIUM_DEB_VERSION" ]] \
        || { echo "Debian package $pkg: '$have', pinned $CHROMIUM_DEB_VERSION" >&2; return 1; }
    [[ -x "$bin" ]] || { echo "$bin missing" >&2; return 1; }
    out="$("$bin" --version 2>&1)" || { echo "$bin --version failed: $out" >&2; return 1; }
    grep -Fq "$prefix $CHROMIUM_VERSION" <<<"$out" \
        || { echo "$bin --version is not $prefix $CHROMIUM_VERSION: $(head -1 <<<"$out")" >&2; return 1; }
}

chromium_verify() { chromium_deb_verify chromium /usr/bin/chromium Chromium; }
chromium-driver_verify() { chromium_deb_verify chromium-driver /usr/bin/chromedriver ChromeDriver; }

install_chromium() {
    install_debian_peer chromium chromium "$CHROMIUM_DEB_VERSION" \
        "/usr/bin/chromium, $CHROMIUM_VERSION = Debian $CHROMIUM_DEB_VERSION" ""
}

install_chromium-driver() {
    install_debian_peer chromium-driver chromium-driver "$CHROMIUM_DEB_VERSION" \
        "/usr/bin/chromedriver, $CHROMIUM_VERSION = Debian $CHROMIUM_DEB_VERSION" ""
}

# ---- helm / kustomize / kubeconform: manifest checkers, go install, pinned ----------------
# One `go install <module>/<pkg>@<version>` each, like telemetrygen. The version each binary
# prints is stamped in with -ldflags where the project's own release build does that (helm,
# kubeconform; kustomize reads it from the build info), and `go version -m` must name the
# pinned module version.
go_tool_verify() {
    local bin="$1" module="$2" version="$3" want_out="$4"
    shift 4
    local out
    out="$("$bin" "$@" 2>&1)" || { echo "$bin $* failed: $out" >&2; return 1; }
    grep -Fq -- "$want_out" <<<"$out" || { echo "$bin $* printed '$out', expected '$want_out'" >&2; return 1; }
    if command -v go >/dev/null 2>&1; then
        local info
        info="$(go version -m "$bin" 2>&1)" || { echo "go version -m $bin failed: $info" >&2; return 1; }
        grep -Eq "^[[:space:]]*mod[[:space:]]+${module//./\\.}[[:space:]]+${version//./\\.}([[:space:]]|$)" <<<"$info" \
            || { echo "$bin is not $module@$version:" >&2; echo "$info" | head -3 >&2; return 1; }
    fi
}

# install_go_tool NAME MODULE PKG VERSION LDFLAGS WANT_OUT VERSION_ARGS...
install_go_tool() {
    local name="$1" module="$2" pkg="$3" version="$4" ldflags="$5" want_out="$6"
    shift 6
    local bin="$PEERS_DIR/bin/$name"
    local stamp="$PEERS_DIR/bin/.$name.stamp"
    local log="$PEERS_DIR/logs/$name.log"
    local want="$pkg@$version ldflags=$ldflags"

    if [[ $FORCE -eq 0 && -x "$bin" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        if go_tool_verify "$bin" "$module" "$version" "$want_out" "$@" 2>"$log.verify"; then
            echo "peer $name: ok ($bin, $version)"
            return 0
        fi
        note "peer $name: cached binary failed verification, re-installing:"
        sed 's/^/    /' "$log.verify" >&2
    fi

    check_go "$name"
    note "peer $name: go install $pkg@$version (log: $log; a cold build takes a few minutes) ..."
    local t0=$SECONDS
    rm -f "$bin" "$stamp"
    (
        echo "# $(date -u +%FT%TZ) go install $want with $(go env GOVERSION)"
        cd "$PEERS_DIR" && go_env go install -trimpath -ldflags "$ldflags" "$pkg@$version"
    ) >"$log" 2>&1 || die_with_log "$log" "peer $name: go install $pkg@$version failed (see $log)"
    [[ -x "$bin" ]] || die_with_log "$log" "peer $name: go install succeeded but $bin is missing"
    go_tool_verify "$bin" "$module" "$version" "$want_out" "$@" 2>>"$log" \
        || die_with_log "$log" "peer $name: installed binary failed verification"
    echo "$want" >"$stamp"
    note "peer $name: installed in $((SECONDS - t0))s"
    echo "peer $name: ok ($bin, $version)"
}

install_helm() {
    install_go_tool helm "$HELM_MODULE" "$HELM_MODULE/cmd/helm" "$HELM_VERSION" \
        "-s -w -X $HELM_MODULE/internal/version.version=$HELM_VERSION -X $HELM_MODULE/pkg/chartutil.k8sVersionMajor=1 -X $HELM_MODULE/pkg/chartutil.k8sVersionMinor=$HELM_K8S_VERSION_MINOR -X $HELM_MODULE/pkg/lint/rules.k8sVersionMajor=1 -X $HELM_MODULE/pkg/lint/rules.k8sVersionMinor=$HELM_K8S_VERSION_MINOR" \
        "$HELM_VERSION" version --template '{{.Version}}'
}

install_kustomize() {
    install_go_tool kustomize "$KUSTOMIZE_MODULE" "$KUSTOMIZE_MODULE" "$KUSTOMIZE_VERSION" \
        "-s -w" "$KUSTOMIZE_VERSION" version
}

install_kubeconform() {
    install_go_tool kubeconform "$KUBECONFORM_MODULE" "$KUBECONFORM_MODULE/cmd/kubeconform" "$KUBECONFORM_VERSION" \
        "-s -w -X main.version=$KUBECONFORM_VERSION" "$KUBECONFORM_VERSION" -v
}

# ---- kubeschemas: offline JSON schemas for kubeconform ----------------------------------
# kube-schemas/
#   venv/                             Python with PyYAML (runs kube_schemas.py; the tests use it too)
#   download/<wheel>                  the pinned kubernetes-validate wheel (pip download, sha256-checked)
#   kubernetes/v<k8s>-standalone-strict/<kind>-<group>-<version>.json
#   crds/<group>/<kind>_<version>.json
# kubeconform -strict -schema-location '<dir>/kubernetes/{{ .NormalizedKubernetesVersion }}-standalone{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json'
#             -schema-location '<dir>/crds/{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json'
kubeschemas_verify() {
    local dir="$1" py="$1/venv/bin/python" have
    have="$("$py" -c 'import yaml; print(yaml.__version__)' 2>&1)" || { echo "$py cannot import yaml: $have" >&2; return 1; }
    [[ "$have" == "$PYYAML_VERSION" ]] || { echo "PyYAML $have in $dir/venv, pinned $PYYAML_VERSION" >&2; return 1; }
    local -a args=()
    local v
    for v in "${KUBE_SCHEMAS_K8S_VERSIONS[@]}"; do args+=(--version "$v"); done
    "$py" "$SCRIPT_DIR/kube_schemas.py" check "$dir" "${args[@]}" --crd telemetry.istio.io/telemetry_v1 >/dev/null
}

install_kubeschemas() {
    local dir="$PEERS_DIR/kube-schemas"
    local stamp="$dir/.meshgate-stamp"
    local log="$PEERS_DIR/logs/kubeschemas.log"
    local conv="$SCRIPT_DIR/kube_schemas.py"
    [[ -f "$conv" ]] || die "missing $conv"
    local want
    want="$KUBE_SCHEMAS_WHEEL sha256=$KUBE_SCHEMAS_WHEEL_SHA256 k8s=${KUBE_SCHEMAS_K8S_VERSIONS[*]} $ISTIO_API_MODULE@$ISTIO_API_VERSION pyyaml=$PYYAML_VERSION converter-sha256=$(sha256sum "$conv" | cut -d' ' -f1)"

    if [[ $FORCE -eq 0 && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        if kubeschemas_verify "$dir" 2>"$log.verify"; then
            echo "peer kubeschemas: ok ($dir, Kubernetes ${KUBE_SCHEMAS_K8S_VERSIONS[*]} + Istio $ISTIO_API_VERSION CRDs)"
            return 0
        fi
        note "peer kubeschemas: cached schemas failed verification, re-installing:"
        sed 's/^/    /' "$log.verify" >&2
    fi

    command -v "$BOOTSTRAP_PYTHON" >/dev/null 2>&1 \
        || die "peer kubeschemas: '$BOOTSTRAP_PYTHON' not found (set MESHGATE_BOOTSTRAP_PYTHON to a Python >= 3.9)"
    check_go kubeschemas
    note "peer kubeschemas: building $dir (log: $log) ..."
    local t0=$SECONDS
    rm -rf "$dir"
    (
        set -euo pipefail
        echo "# $(date -u +%FT%TZ) kubeschemas: $want"
        "$BOOTSTRAP_PYTHON" -m venv "$dir/venv"
        "$dir/venv/bin/python" -m pip install --no-input --disable-pip-version-check --require-virtualenv \
            "PyYAML==$PYYAML_VERSION"
        "$dir/venv/bin/python" -m pip download --no-input --disable-pip-version-check --no-deps \
            --only-binary=:all: -d "$dir/download" "$KUBE_SCHEMAS_WHEEL"
        wheel="$(find "$dir/download" -name '*.whl' | head -1)"
        [[ -n "$wheel" ]] || { echo "pip download left no wheel in $dir/download" >&2; exit 1; }
        got="$(sha256sum "$wheel" | cut -d' ' -f1)"
        [[ "$got" == "$KUBE_SCHEMAS_WHEEL_SHA256" ]] \
            || { echo "$wheel has sha256 $got, pinned $KUBE_SCHEMAS_WHEEL_SHA256" >&2; exit 1; }
        args=()
        for v in "${KUBE_SCHEMAS_K8S_VERSIONS[@]}"; do args+=(--version "$v"); done
        "$dir/venv/bin/python" "$conv" kubernetes --wheel "$wheel" "${args[@]}" --out "$dir"
        cd "$PEERS_DIR"
        moddir="$(go_env go mod download -json "$ISTIO_API_MODULE@$ISTIO_API_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')"
        crds="$moddir/kubernetes/customresourcedefinitions.gen.yaml"
        [[ -n "$moddir" && -f "$crds" ]] || { echo "go mod download gave no $ISTIO_API_MODULE module with kubernetes/customresourcedefinitions.gen.yaml" >&2; exit 1; }
        "$dir/venv/bin/python" "$conv" crds --out "$dir" "$crds"
    ) >"$log" 2>&1 || die_with_log "$log" "peer kubeschemas: building the schemas failed (see $log)"
    kubeschemas_verify "$dir" 2>>"$log" || die_with_log "$log" "peer kubeschemas: built schemas failed verification"
    echo "$want" >"$stamp"
    note "peer kubeschemas: installed in $((SECONDS - t0))s"
    echo "peer kubeschemas: ok ($dir, Kubernetes ${KUBE_SCHEMAS_K8S_VERSIONS[*]} + Istio $ISTIO_API_VERSION CRDs)"
}

for peer in "${peers[@]}"; do
    "install_$peer"
done
