#!/usr/bin/env bash
# Start, stop and check meshgate's server test peers, installed by scripts/peers/install.sh.
#
#   scripts/peers/services.sh start|stop|status [jaeger|opensearch|elasticsearch|prometheus ...]  (default: all)
#
# Everything binds to 127.0.0.1 on free ports picked at start (below the kernel's ephemeral
# range, so outgoing connections cannot take them first), so several runs can go side by side
# when each has its own state dir:
#   ${MESHGATE_SERVICES_DIR:-/tmp/meshgate-services-$UID}/
#     env                   `source` it: exports the URLs of the services that are running
#     <service>/pid         "<pid> <start time>" of the service's process group leader
#     <service>/log         its stdout/stderr;  <service>/{data,logs,config,tmp} for OpenSearch/ES
#     prometheus/prometheus.yml, prometheus/prometheus-data/   Prometheus' config and TSDB
#
# Variables in the env file:
#   MESHGATE_JAEGER_OTLP_GRPC=127.0.0.1:<p>            Jaeger OTLP gRPC receiver
#   MESHGATE_JAEGER_OTLP_HTTP=http://127.0.0.1:<p>     Jaeger OTLP HTTP receiver
#   MESHGATE_JAEGER_COLLECTOR_GRPC=127.0.0.1:<p>       Jaeger api_v2 CollectorService (gRPC, "14250")
#   MESHGATE_JAEGER_QUERY=http://127.0.0.1:<p>         Jaeger query HTTP API (/api/traces, /api/v3/...)
#   MESHGATE_OPENSEARCH_URL=http://127.0.0.1:<p>       OpenSearch REST (security off)
#   MESHGATE_ELASTICSEARCH_URL=http://127.0.0.1:<p>    Elasticsearch REST (security off)
#   MESHGATE_PROMETHEUS_URL=http://127.0.0.1:<p>       Prometheus HTTP API; remote write at /api/v1/write
#   MESHGATE_SERVICES_DIR                              the state dir
#
# start: (re)starts the named services in parallel, each with a fresh data dir, and waits until
#   each is healthy (Jaeger: the query API answers; OpenSearch/ES: cluster health is yellow or
#   green; Prometheus: /-/ready), at most MESHGATE_SERVICES_TIMEOUT seconds (default 180) each. A service already
#   running and healthy is left alone. On any failure it prints the tail of the log, stops what
#   it started and exits 1.
# stop: stops the named services (SIGTERM to the process group, SIGKILL after 30 s); safe to repeat.
# status: prints state, URL and RSS of each; exits 3 if one is not running and healthy.
#
# Java: OpenSearch runs on MESHGATE_OPENSEARCH_JAVA_HOME (default: the `java` on PATH, >= 11);
# Elasticsearch 8 needs Java 21+: MESHGATE_ELASTICSEARCH_JAVA_HOME (default: the newest JDK >= 21
# among $JAVA_HOME, `java` on PATH and /usr/lib/jvm/*). Heap: MESHGATE_SERVICES_HEAP (512m).
# OpenSearch and Elasticsearch refuse to run as root: as root they run in a user namespace
# (`unshare --user`) as an unprivileged uid that maps back to root, so file ownership is unchanged.
# Prometheus ($MESHGATE_PROMETHEUS, the Debian package's /usr/bin/prometheus) runs with a config
# without scrape jobs, the remote-write receiver on, and a fresh TSDB kept 1 day.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ALL_SERVICES=(jaeger opensearch elasticsearch prometheus)
# shellcheck source=scripts/peers/env.sh
. "$SCRIPT_DIR/env.sh"
STATE_DIR="${MESHGATE_SERVICES_DIR:-/tmp/meshgate-services-$UID}"
TIMEOUT="${MESHGATE_SERVICES_TIMEOUT:-180}"
HEAP="${MESHGATE_SERVICES_HEAP:-512m}"
STOP_GRACE=30
NS_UID=1000 # uid the search servers see inside the user namespace when started as root

die() {
    echo "services.sh: ERROR: $*" >&2
    exit 1
}
note() { echo "services.sh: $*" >&2; }

usage() {
    sed -n '2,40p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

# ---- arguments ------------------------------------------------------------------------
[[ $# -ge 1 ]] || { usage >&2; exit 2; }
cmd="$1"
shift
case "$cmd" in
    start | stop | status) ;;
    -h | --help | help) usage; exit 0 ;;
    *) echo "services.sh: ERROR: unknown command '$cmd' (start|stop|status)" >&2; exit 2 ;;
esac
services=()
for arg in "$@"; do
    case "$arg" in
        jaeger | opensearch | elasticsearch | prometheus) services+=("$arg") ;;
        *) echo "services.sh: ERROR: unknown service '$arg' (known: ${ALL_SERVICES[*]})" >&2; exit 2 ;;
    esac
done
[[ ${#services[@]} -gt 0 ]] || services=("${ALL_SERVICES[@]}")
[[ "$TIMEOUT" =~ ^[0-9]+$ ]] || die "MESHGATE_SERVICES_TIMEOUT must be a number of seconds, not '$TIMEOUT'"

STATE_DIR="$(realpath -m -- "$STATE_DIR")"
mkdir -p "$STATE_DIR" || die "cannot create state dir $STATE_DIR"
chmod 700 "$STATE_DIR" 2>/dev/null || true
ENV_FILE="$STATE_DIR/env"

# ---- process bookkeeping ------------------------------------------------------------------
# The start time (clock ticks since boot, /proc/<pid>/stat field 22) guards against pid reuse.
proc_start_time() {
    local stat
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
    stat="${stat##*) }" # drop "pid (comm) "; the rest are fields 3...
    awk '{print $20}' <<<"$stat"
}

# Prints the pid of a service's process group / session leader if that process (or its zombie)
# is still the one that was started, or fails.
service_pid() {
    local pidfile="$STATE_DIR/$1/pid" pid start now
    [[ -f "$pidfile" ]] || return 1
    read -r pid start <"$pidfile" || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    now="$(proc_start_time "$pid")" || return 1
    [[ "$now" == "$start" ]] || return 1
    echo "$pid"
}

# The leader has not exited (an exited child of this script lingers as a zombie until we exit).
leader_alive() {
    local stat
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
    stat="${stat##*) }"
    [[ "${stat%% *}" != Z ]]
}

# Prints the pid of a service that is running.
running_pid() {
    local pid
    pid="$(service_pid "$1")" && leader_alive "$pid" && echo "$pid"
}

group_alive() { kill -0 -- "-$1" 2>/dev/null; }

# Resident memory of the whole session (launcher + server JVMs), in MiB.
session_rss_mib() {
    ps -o rss= -s "$1" 2>/dev/null | awk '{s+=$1} END {printf "%d", s/1024}'
}

write_pidfile() {
    local svc="$1" pid="$2" start
    start="$(proc_start_time "$pid")" || start="?"
    echo "$pid $start" >"$STATE_DIR/$svc/pid"
}

# Collect the env fragments of the running services into $ENV_FILE (atomically).
write_env_file() {
    local tmp="$ENV_FILE.tmp.$$" svc
    {
        echo "# Generated by scripts/peers/services.sh at $(date -u +%FT%TZ); source it."
        echo "export MESHGATE_SERVICES_DIR='$STATE_DIR'"
        for svc in "${ALL_SERVICES[@]}"; do
            if [[ -f "$STATE_DIR/$svc/env" ]] && running_pid "$svc" >/dev/null; then
                cat "$STATE_DIR/$svc/env"
            fi
        done
    } >"$tmp"
    mv -f "$tmp" "$ENV_FILE"
}

# Free loopback TCP ports, all distinct, below the ephemeral range; held until all are found.
pick_ports() {
    python3 - "$1" <<'PY'
import random, socket, sys
n = int(sys.argv[1])
lo, hi = 10000, 32767
try:
    eph = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    if eph - 1 > lo + 1000:
        hi = eph - 1
except (OSError, ValueError, IndexError):
    pass
held, ports = [], []
for _ in range(2000):
    if len(ports) == n:
        break
    p = random.randint(lo, hi)
    if p in ports:
        continue
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", p))
    except OSError:
        s.close()
        continue
    held.append(s)
    ports.append(p)
for s in held:
    s.close()
if len(ports) != n:
    sys.exit("could not find %d free loopback ports" % n)
print(" ".join(map(str, ports)))
PY
}

# ---- Java ---------------------------------------------------------------------------------
java_major() {
    local jh="$1" v=""
    [[ -x "$jh/bin/java" ]] || return 1
    if [[ -f "$jh/release" ]]; then
        v="$(sed -n 's/^JAVA_VERSION="\([^"]*\)".*/\1/p' "$jh/release")"
    fi
    if [[ -z "$v" ]]; then
        v="$("$jh/bin/java" -version 2>&1 | sed -n 's/.*version "\([^"]*\)".*/\1/p' | head -1)"
    fi
    v="${v#1.}"
    v="${v%%[.+-]*}"
    [[ "$v" =~ ^[0-9]+$ ]] || return 1
    echo "$v"
}

path_java_home() {
    local j
    j="$(command -v java 2>/dev/null)" || return 1
    j="$(readlink -f "$j")" || return 1
    echo "${j%/bin/java}"
}

# java_home_for <service> <min major> <prefer: path|newest>
java_home_for() {
    local svc="$1" min="$2" prefer="$3" var jh m
    var="MESHGATE_$(tr '[:lower:]' '[:upper:]' <<<"$svc")_JAVA_HOME"
    if [[ -n "${!var:-}" ]]; then
        m="$(java_major "${!var}")" || die "$svc: $var=${!var} is not a JDK (no bin/java)"
        [[ "$m" -ge "$min" ]] || die "$svc: $var=${!var} is Java $m, $svc needs Java $min or newer"
        echo "${!var}"
        return
    fi
    local best="" bestm=0 cands=()
    if [[ "$prefer" == path ]]; then
        jh="$(path_java_home)" && cands+=("$jh")
        [[ -n "${JAVA_HOME:-}" ]] && cands+=("$JAVA_HOME")
    else
        [[ -n "${JAVA_HOME:-}" ]] && cands+=("$JAVA_HOME")
        jh="$(path_java_home)" && cands+=("$jh")
        for jh in /usr/lib/jvm/*/; do cands+=("${jh%/}"); done
    fi
    for jh in "${cands[@]}"; do
        m="$(java_major "$jh" 2>/dev/null)" || continue
        [[ "$m" -ge "$min" ]] || continue
        if [[ "$prefer" == path ]]; then
            echo "$jh"
            return
        fi
        if [[ "$m" -gt "$bestm" ]]; then best="$jh"; bestm="$m"; fi
    done
    [[ -n "$best" ]] || die "$svc: no Java $min or newer found (looked at: ${cands[*]:-nothing}); set $var"
    echo "$best"
}

# OpenSearch/Elasticsearch exit at once when started as root.
as_unprivileged() {
    if [[ $EUID -ne 0 ]]; then
        return 0
    fi
    command -v unshare >/dev/null 2>&1 || die "running as root, and 'unshare' (util-linux) is missing: OpenSearch/Elasticsearch refuse to run as root"
    unshare --user --map-user="$NS_UID" --map-group="$NS_UID" true 2>/dev/null \
        || die "running as root, and user namespaces are not available (unshare --user failed): OpenSearch/Elasticsearch refuse to run as root; run services.sh as a non-root user"
}

# ---- launching ----------------------------------------------------------------------------
# Each launcher prepares $STATE_DIR/<svc>, starts the service in the background in its own
# session (setsid, so stop can signal the whole process group), writes the pid file, an
# env.pending fragment, and sets HEALTH_URL / HEALTH_GREP for the wait loop.
HEALTH_URL=""
HEALTH_GREP=""

launch_jaeger() {
    local dir="$STATE_DIR/jaeger" bin="$MESHGATE_JAEGER"
    [[ -x "$bin" ]] || die "jaeger: $bin is missing: run scripts/peers/install.sh jaeger"
    local ports otlp_grpc otlp_http coll_grpc query_http query_grpc
    ports="$(pick_ports 5)" || die "jaeger: could not pick free ports"
    read -r otlp_grpc otlp_http coll_grpc query_http query_grpc <<<"$ports"
    rm -rf "$dir"
    mkdir -p "$dir"
    (
        exec 9>&- # do not hold services.sh's lock
        cd "$dir"
        export JAEGER_OTLP_GRPC_ENDPOINT="127.0.0.1:$otlp_grpc"
        export JAEGER_OTLP_HTTP_ENDPOINT="127.0.0.1:$otlp_http"
        export JAEGER_COLLECTOR_GRPC_ENDPOINT="127.0.0.1:$coll_grpc"
        export JAEGER_QUERY_HTTP_ENDPOINT="127.0.0.1:$query_http"
        export JAEGER_QUERY_GRPC_ENDPOINT="127.0.0.1:$query_grpc"
        exec setsid "$bin" --config "file:$SCRIPT_DIR/jaeger-config.yaml"
    ) >"$dir/log" 2>&1 </dev/null &
    write_pidfile jaeger "$!"
    cat >"$dir/env.pending" <<EOF
export MESHGATE_JAEGER_OTLP_GRPC=127.0.0.1:$otlp_grpc
export MESHGATE_JAEGER_OTLP_HTTP=http://127.0.0.1:$otlp_http
export MESHGATE_JAEGER_COLLECTOR_GRPC=127.0.0.1:$coll_grpc
export MESHGATE_JAEGER_QUERY=http://127.0.0.1:$query_http
EOF
    HEALTH_URL="http://127.0.0.1:$query_http/api/services"
    HEALTH_GREP='"data"'
    note "jaeger: starting $("$bin" version 2>/dev/null | sed -n 's/.*"gitVersion": *"\([^"]*\)".*/\1/p' | head -1) (query http://127.0.0.1:$query_http, OTLP gRPC 127.0.0.1:$otlp_grpc, HTTP $otlp_http, collector gRPC $coll_grpc, query gRPC $query_grpc)"
}

# Prometheus: no scrape jobs (not even itself), only what is remote-written to it.
launch_prometheus() {
    local dir="$STATE_DIR/prometheus" bin="$MESHGATE_PROMETHEUS" version
    [[ -x "$bin" ]] || die "prometheus: $bin is missing: run scripts/peers/install.sh prometheus"
    version="$("$bin" --version 2>&1 | sed -n 's/^prometheus, version \([^ ]*\).*/\1/p' | head -1)"
    local port
    port="$(pick_ports 1)" || die "prometheus: could not pick a free port"
    rm -rf "$dir"
    mkdir -p "$dir/prometheus-data"
    cat >"$dir/prometheus.yml" <<'EOF'
# Written by meshgate's scripts/peers/services.sh: no scrape jobs; series arrive by remote write.
global:
  scrape_interval: 15s
  evaluation_interval: 15s
  external_labels: {}
EOF
    (
        exec 9>&- # do not hold services.sh's lock
        cd "$dir"
        exec setsid "$bin" \
            --config.file="$dir/prometheus.yml" \
            --storage.tsdb.path="$dir/prometheus-data" \
            --storage.tsdb.retention.time=1d \
            --web.listen-address="127.0.0.1:$port" \
            --web.enable-remote-write-receiver
    ) >"$dir/log" 2>&1 </dev/null &
    write_pidfile prometheus "$!"
    echo "export MESHGATE_PROMETHEUS_URL=http://127.0.0.1:$port" >"$dir/env.pending"
    HEALTH_URL="http://127.0.0.1:$port/-/ready"
    HEALTH_GREP='Ready'
    note "prometheus: starting ${version:-?} ($bin) on http://127.0.0.1:$port (remote write: /api/v1/write)"
}

launch_opensearch() { launch_search opensearch; }
launch_elasticsearch() { launch_search elasticsearch; }

# launch_search opensearch|elasticsearch
launch_search() {
    local svc="$1" dir="$STATE_DIR/$1" home java_home minjava prefer
    local upper
    upper="$(tr '[:lower:]' '[:upper:]' <<<"$svc")"
    home="MESHGATE_${upper}_HOME"
    home="${!home}"
    [[ -x "$home/bin/$svc" ]] || die "$svc: $home/bin/$svc is missing: run scripts/peers/install.sh $svc"
    home="$(readlink -f "$home")"
    if [[ "$svc" == opensearch ]]; then minjava=11 prefer=path; else minjava=21 prefer=newest; fi
    java_home="$(java_home_for "$svc" "$minjava" "$prefer")"
    as_unprivileged

    local ports http transport
    ports="$(pick_ports 2)" || die "$svc: could not pick free ports"
    read -r http transport <<<"$ports"
    rm -rf "$dir"
    mkdir -p "$dir/data" "$dir/logs" "$dir/tmp"
    # A private copy of the config dir: the server may write to it (keystore), and the
    # install stays read-only and shareable.
    cp -r "$home/config" "$dir/config"
    # OpenSearch's launcher runs the JVM in the install dir: point jvm.options' relative paths
    # (gc log, error file, heap dumps) into the state dir so nothing is written to the install.
    sed -i -e "s#file=logs/#file=$dir/logs/#" -e "s#ErrorFile=logs/#ErrorFile=$dir/logs/#" \
        -e "s#Xloggc:logs/#Xloggc:$dir/logs/#" -e "s#HeapDumpPath=data\$#HeapDumpPath=$dir/data#" \
        "$dir/config/jvm.options"

    local heap="-Xms$HEAP -Xmx$HEAP"
    local settings=(
        -E "cluster.name=meshgate-$svc"
        -E "node.name=meshgate-$svc"
        -E "discovery.type=single-node"
        -E "network.host=127.0.0.1"
        -E "http.port=$http"
        -E "transport.port=$transport"
        -E "path.data=$dir/data"
        -E "path.logs=$dir/logs"
        -E "cluster.routing.allocation.disk.threshold_enabled=false"
        -E "action.destructive_requires_name=false"
    )
    local envs=()
    if [[ "$svc" == opensearch ]]; then
        # The integ-test zip has no security plugin: plain HTTP, no auth.
        envs=(OPENSEARCH_JAVA_HOME="$java_home" JAVA_HOME="$java_home" OPENSEARCH_PATH_CONF="$dir/config"
            OPENSEARCH_TMPDIR="$dir/tmp" OPENSEARCH_JAVA_OPTS="$heap")
    else
        settings+=(-E "xpack.security.enabled=false")
        envs=(ES_JAVA_HOME="$java_home" JAVA_HOME="$java_home" ES_PATH_CONF="$dir/config"
            ES_TMPDIR="$dir/tmp" ES_JAVA_OPTS="$heap")
    fi
    local wrap=()
    if [[ $EUID -eq 0 ]]; then
        wrap=(unshare --user --map-user="$NS_UID" --map-group="$NS_UID")
    fi
    (
        exec 9>&- # do not hold services.sh's lock
        cd "$dir"
        exec setsid env "${envs[@]}" "${wrap[@]}" "$home/bin/$svc" "${settings[@]}"
    ) >"$dir/log" 2>&1 </dev/null &
    write_pidfile "$svc" "$!"
    echo "export MESHGATE_${upper}_URL=http://127.0.0.1:$http" >"$dir/env.pending"
    HEALTH_URL="http://127.0.0.1:$http/_cluster/health?wait_for_status=yellow&timeout=1s"
    HEALTH_GREP='"timed_out":false'
    note "$svc: starting $(basename "$home") on Java $(java_major "$java_home") ($java_home), heap $HEAP, http 127.0.0.1:$http, transport $transport"
}

healthy() {
    local out
    out="$(curl -fsS --max-time 5 "$1" 2>/dev/null)" || return 1
    grep -q -- "$2" <<<"$out"
}

health_url_of() {
    # Rebuild a running service's health URL from its env fragment.
    local svc="$1" f="$STATE_DIR/$1/env" url
    [[ -f "$f" ]] || return 1
    case "$svc" in
        jaeger)
            url="$(sed -n 's/^export MESHGATE_JAEGER_QUERY=//p' "$f")"
            [[ -n "$url" ]] && echo "$url/api/services"$'\t''"data"'
            ;;
        prometheus)
            url="$(sed -n 's/^export MESHGATE_PROMETHEUS_URL=//p' "$f")"
            [[ -n "$url" ]] && echo "$url/-/ready"$'\t''Ready'
            ;;
        *)
            url="$(sed -n 's/^export MESHGATE_[A-Z]*_URL=//p' "$f")"
            [[ -n "$url" ]] && echo "$url/_cluster/health?wait_for_status=yellow&timeout=1s"$'\t''"timed_out":false'
            ;;
    esac
}

show_log_tail() {
    local svc="$1" dir="$STATE_DIR/$1" f
    for f in "$dir/log" "$dir/logs/meshgate-$svc.log"; do
        [[ -s "$f" ]] || continue
        echo "----- last 40 lines of $f -----" >&2
        tail -n 40 "$f" >&2 || true
        echo "----- end of $f -----" >&2
    done
}

# ---- stop ---------------------------------------------------------------------------------
stop_one() {
    local svc="$1" dir="$STATE_DIR/$1" pid
    if pid="$(service_pid "$svc")"; then
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
        local i
        for ((i = 0; i < STOP_GRACE * 10; i++)); do
            group_alive "$pid" || break
            sleep 0.1
        done
        if group_alive "$pid"; then
            note "$svc: still running ${STOP_GRACE}s after SIGTERM, sending SIGKILL"
            kill -KILL -- "-$pid" 2>/dev/null || true
            for ((i = 0; i < 50; i++)); do
                group_alive "$pid" || break
                sleep 0.1
            done
        fi
        group_alive "$pid" && die "$svc: process group $pid survived SIGKILL"
        echo "$svc: stopped (pid $pid)"
    else
        echo "$svc: not running"
    fi
    rm -f "$dir/pid" "$dir/env" "$dir/env.pending"
}

# ---- commands -----------------------------------------------------------------------------
do_status() {
    local svc pid rc=0 hu url grep_for
    for svc in "${services[@]}"; do
        if pid="$(running_pid "$svc")"; then
            hu="$(health_url_of "$svc")" || hu=""
            url="${hu%%$'\t'*}"
            grep_for="${hu#*$'\t'}"
            if [[ -n "$hu" ]] && healthy "$url" "$grep_for"; then
                echo "$svc: running, healthy (pid $pid, RSS $(session_rss_mib "$pid") MiB) $(sed 's/^export //' "$STATE_DIR/$svc/env" | tr '\n' ' ')"
            else
                echo "$svc: running, NOT healthy (pid $pid, RSS $(session_rss_mib "$pid") MiB; log: $STATE_DIR/$svc/log)"
                rc=3
            fi
        else
            echo "$svc: stopped"
            rc=3
        fi
    done
    echo "env file: $ENV_FILE"
    return $rc
}

do_stop() {
    local svc
    for svc in "${services[@]}"; do
        stop_one "$svc"
    done
    write_env_file
}

# Services launched by this `start`; stopped again if it fails anywhere (die included).
STARTED=()
START_DONE=0
stop_started_on_failure() {
    local rc=$? svc
    if [[ $START_DONE -eq 0 && ${#STARTED[@]} -gt 0 ]]; then
        for svc in "${STARTED[@]}"; do
            stop_one "$svc" >&2 || true
        done
        write_env_file || true
    fi
    exit $rc
}

do_start() {
    trap stop_started_on_failure EXIT
    command -v curl >/dev/null 2>&1 || die "'curl' is needed to check the services' health"
    command -v python3 >/dev/null 2>&1 || die "'python3' is needed to pick free ports"
    local svc pid hu
    local -a pending=()
    local -A url grepfor t0
    for svc in "${services[@]}"; do
        if pid="$(running_pid "$svc")"; then
            hu="$(health_url_of "$svc")" || hu=""
            if [[ -n "$hu" ]] && healthy "${hu%%$'\t'*}" "${hu#*$'\t'}"; then
                echo "$svc: already running and healthy (pid $pid)"
                continue
            fi
            note "$svc: running but not healthy, restarting it"
        fi
        stop_one "$svc" >/dev/null
        STARTED+=("$svc")
        "launch_$svc"
        pending+=("$svc")
        url[$svc]="$HEALTH_URL"
        grepfor[$svc]="$HEALTH_GREP"
        t0[$svc]=$SECONDS
    done

    local failed="" reason=""
    while [[ ${#pending[@]} -gt 0 && -z "$failed" ]]; do
        local still=()
        for svc in "${pending[@]}"; do
            if ! running_pid "$svc" >/dev/null; then
                failed="$svc" reason="exited during startup"
                break
            fi
            if healthy "${url[$svc]}" "${grepfor[$svc]}"; then
                mv -f "$STATE_DIR/$svc/env.pending" "$STATE_DIR/$svc/env"
                pid="$(service_pid "$svc")"
                echo "$svc: healthy after $((SECONDS - t0[$svc]))s (pid $pid, RSS $(session_rss_mib "$pid") MiB)"
                continue
            fi
            if ((SECONDS - t0[$svc] >= TIMEOUT)); then
                failed="$svc" reason="not healthy after ${TIMEOUT}s (${url[$svc]})"
                break
            fi
            still+=("$svc")
        done
        [[ -n "$failed" ]] && break
        pending=("${still[@]+"${still[@]}"}")
        [[ ${#pending[@]} -eq 0 ]] || sleep 1
    done

    if [[ -n "$failed" ]]; then
        show_log_tail "$failed"
        echo "services.sh: ERROR: $failed $reason (state: $STATE_DIR/$failed)" >&2
        exit 1 # the EXIT trap stops what this start launched
    fi
    write_env_file
    START_DONE=1
    echo "env file: $ENV_FILE"
    sed 's/^/    /' "$ENV_FILE"
}

# start/stop serialize on a lock in the state dir; status only reads.
if [[ "$cmd" != status ]] && command -v flock >/dev/null 2>&1; then
    exec 9>"$STATE_DIR/.lock"
    flock -w 600 9 || die "timed out waiting for another services.sh holding $STATE_DIR/.lock"
fi
"do_$cmd"
