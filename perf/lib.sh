# Shared helpers for perf/run.sh, perf/gate.sh and perf/profile.sh (sourced, not run).
#
# Every process started here is recorded by PID in PERF_PIDS and stopped by PID on exit
# (SIGTERM, then SIGKILL after 10 s). Nothing is ever killed by name.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${PERF_OUT:-$ROOT/perf/out}"
RAW="$OUT/raw"
TMPD="$OUT/tmp"
# PERF_BIN / PERF_LG: binaries built elsewhere (with PERF_PREBUILT=1, build_all builds nothing).
BIN="${PERF_BIN:-$ROOT/target/release/svc-registry}"
RONCTL="$ROOT/target/release/ronctl"
LG="${PERF_LG:-$OUT/target/release/loadgen}"
PERF_PIDS=()

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

stop_pid() {
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
        sleep 0.1
    done
    log "pid $pid ignored SIGTERM for 10 s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

stop_all() {
    local pid
    for pid in "${PERF_PIDS[@]:-}"; do
        [ -n "$pid" ] && stop_pid "$pid"
    done
    PERF_PIDS=()
}

forget_pid() {
    local pid=$1 keep=() p
    for p in "${PERF_PIDS[@]:-}"; do [ "$p" != "$pid" ] && [ -n "$p" ] && keep+=("$p"); done
    PERF_PIDS=("${keep[@]:-}")
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Install the Debian packages that provide the given commands, if any is missing.
ensure_tools() {
    local missing=() cmd pkg
    for cmd in "$@"; do
        command -v "$cmd" >/dev/null 2>&1 && continue
        case "$cmd" in
            etcd) pkg=etcd-server ;;
            etcdctl) pkg=etcd-client ;;
            nginx) pkg=nginx-light ;;
            callgrind_annotate | valgrind) pkg=valgrind ;;
            python3) pkg=python3 ;;
            strip) pkg=binutils ;;
            *) pkg=$cmd ;;
        esac
        missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" != 0 ]; then
        log "missing ${missing[*]} and not root: install them (apt-get install ${missing[*]})"
        return 1
    fi
    log "apt-get install ${missing[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

build_all() {
    if [ "${PERF_PREBUILT:-0}" = 1 ]; then
        log "PERF_PREBUILT=1: using $BIN and $LG as built"
        return 0
    fi
    log "cargo build --release (svc-registry, ronctl)"
    (cd "$ROOT" && cargo build --release --bins -q)
    log "cargo build --release (perf/loadgen, target dir $OUT/target)"
    (cd "$ROOT/perf/loadgen" && CARGO_TARGET_DIR="$OUT/target" cargo build --release -q)
}

# write_config DIR THRESHOLD NSIGNERS FSYNC [EXTRA_TOML_TABLES]
# Writes DIR/config.toml for a registry on 127.0.0.1:0 with data in DIR/data. The signer keys
# are loadgen's k1..kN of algorithm SIGNER_ALG (ed25519 unless set; see `loadgen signers`).
write_config() {
    local dir=$1 threshold=$2 nsigners=$3 fsync=$4 extra=${5:-}
    mkdir -p "$dir"
    cat >"$dir/config.toml" <<EOF
registry_id = "perf-registry"
registry_addr = "127.0.0.1:0"
metrics_addr = "127.0.0.1:0"
data_dir = "$dir/data"
workers = 0
max_inflight = 4096
log_level = "info"

[signers]
threshold = $threshold
$("$LG" signers "$nsigners" --alg "${SIGNER_ALG:-ed25519}")

[storage]
fsync = "$fsync"
fsync_batch_max_delay_ms = 0

[proposals]
max_pending = 4096
max_ops = 1000

[sse]
max_subscribers = 2048

$extra
EOF
}

# start_registry NAME DIR [FLAGS...]: start the server on DIR/config.toml, wait for the ready
# line; sets SPID, RA (registry addr), MA (metrics addr).
start_registry() {
    local name=$1 dir=$2
    shift 2
    local err="$RAW/$name.stderr"
    "$BIN" --config "$dir/config.toml" "$@" 2>"$err" >/dev/null &
    SPID=$!
    PERF_PIDS+=("$SPID")
    local i
    for i in $(seq 1 600); do
        if grep -q 'role=read-plane' "$err" 2>/dev/null; then
            RA=$(grep -o 'role=read-plane registry_addr=[^ ]*' "$err" | head -1 | sed 's/.*=//')
            MA=$(grep -o 'role=read-plane .*metrics_addr=[^ ]*' "$err" | head -1 | sed 's/.*metrics_addr=//')
            if [ "$*" != "--read-only" ] && ! grep -q 'role=write-plane' "$err"; then
                sleep 0.05
                continue
            fi
            return 0
        fi
        kill -0 "$SPID" 2>/dev/null || { log "server $name exited:"; tail -5 "$err" >&2; return 1; }
        sleep 0.1
    done
    log "server $name not ready in 60 s"
    return 1
}

# rss_status PID: the memory lines of /proc/PID/status (RssAnon: the heap; VmRSS: what
# process_resident_memory_bytes reports).
rss_status() {
    grep -E '^(VmRSS|RssAnon|RssFile|RssShmem):' "/proc/$1/status"
}

stop_registry() {
    stop_pid "$SPID"
    forget_pid "$SPID"
}

# start_nginx ROOTDIR [CERT KEY]: serve ROOTDIR's files on a free port, over TLS when given a
# PEM certificate and key (TLS 1.2 and 1.3, nginx's defaults otherwise); sets NGINX_PID,
# NGINX_ADDR, NGINX_SCHEME.
start_nginx() {
    local root=$1 cert=${2:-} key=${3:-} port prefix listen_opts="" ssl_lines=""
    NGINX_SCHEME=http
    if [ -n "$cert" ]; then
        nginx -V 2>&1 | grep -q -- '--with-http_ssl_module' \
            || { log "this nginx has no ssl module (nginx -V)"; return 1; }
        listen_opts=" ssl"
        ssl_lines="ssl_certificate $cert; ssl_certificate_key $key; ssl_protocols TLSv1.2 TLSv1.3;"
        NGINX_SCHEME=https
    fi
    port=$(free_port)
    prefix="$TMPD/nginx"
    mkdir -p "$prefix/logs" "$prefix/tmp"
    cat >"$prefix/nginx.conf" <<EOF
worker_processes 2;
pid $prefix/nginx.pid;
error_log $prefix/logs/error.log error;
events { worker_connections 8192; }
http {
    access_log off;
    keepalive_requests 10000000;
    keepalive_timeout 60s;
    client_body_temp_path $prefix/tmp;
    proxy_temp_path $prefix/tmp;
    fastcgi_temp_path $prefix/tmp;
    uwsgi_temp_path $prefix/tmp;
    scgi_temp_path $prefix/tmp;
    server {
        listen 127.0.0.1:$port$listen_opts;
        $ssl_lines
        root $root;
        default_type application/json;
        etag off;
    }
}
EOF
    nginx -p "$prefix" -c "$prefix/nginx.conf" -g 'daemon off;' 2>"$RAW/nginx.stderr" &
    NGINX_PID=$!
    PERF_PIDS+=("$NGINX_PID")
    NGINX_ADDR="127.0.0.1:$port"
    local i
    for i in $(seq 1 100); do
        curl -kfs -o /dev/null "$NGINX_SCHEME://$NGINX_ADDR/" -m 1 2>/dev/null && return 0
        curl -ks -o /dev/null -w '%{http_code}' "$NGINX_SCHEME://$NGINX_ADDR/" -m 1 2>/dev/null | grep -q '^[1-5]' && return 0
        sleep 0.1
    done
    log "nginx did not start"; cat "$RAW/nginx.stderr" >&2; return 1
}

# start_etcd: single-node etcd on free ports, data under $TMPD/etcd; sets ETCD_PID, ETCD_ADDR.
start_etcd() {
    local cport pport dir="$TMPD/etcd"
    rm -rf "$dir"
    cport=$(free_port)
    pport=$(free_port)
    ETCD_ADDR="127.0.0.1:$cport"
    ETCD_UNSUPPORTED_ARCH=$(dpkg --print-architecture 2>/dev/null || echo amd64) \
        etcd --name perf --data-dir "$dir" \
        --listen-client-urls "http://$ETCD_ADDR" --advertise-client-urls "http://$ETCD_ADDR" \
        --listen-peer-urls "http://127.0.0.1:$pport" \
        --initial-advertise-peer-urls "http://127.0.0.1:$pport" \
        --initial-cluster "perf=http://127.0.0.1:$pport" \
        --logger zap --log-level error >"$RAW/etcd.stdout" 2>"$RAW/etcd.stderr" &
    ETCD_PID=$!
    PERF_PIDS+=("$ETCD_PID")
    local i
    for i in $(seq 1 200); do
        curl -fs -m 1 -X POST "http://$ETCD_ADDR/v3/maintenance/status" -d '{}' >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    log "etcd did not start"; tail -5 "$RAW/etcd.stderr" >&2; return 1
}

