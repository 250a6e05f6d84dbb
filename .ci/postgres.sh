#!/usr/bin/env bash
# A throwaway PostgreSQL 15 server (with pgvector when it can be built) for
# the tests, on loopback, trusting local connections, in a temporary folder.
#
#   eval "$(.ci/postgres.sh start)"   # installs what is missing, starts it, prints the exports
#   cargo test --workspace            # the PostgreSQL tests read SLUICE_TEST_POSTGRES_URL
#   .ci/postgres.sh stop              # stops it and removes its folder (reads SLUICE_TEST_POSTGRES_DIR)
#
# `start` prints, for eval:
#   SLUICE_TEST_POSTGRES_URL   postgres://postgres@127.0.0.1:PORT/postgres
#   SLUICE_TEST_POSTGRES_DIR   the temporary folder (data, log, socket)
#   SLUICE_TEST_POSTGRES_DATA  the data directory (for pg_ctl restart in the tests)
#   SLUICE_TEST_PG_CTL         the pg_ctl binary
#   SLUICE_TEST_PG_USER        the user the server runs as (tests run pg_ctl through runuser when it is not them)
#   SLUICE_TEST_PGVECTOR=1     when pgvector is installed (the vector tests then require it)
# Everything else goes to stderr. As root (CI), the server runs as `postgres`
# through runuser, because initdb refuses root; as another user, as that user.
#
# Environment: PG_VERSION (15), PGVECTOR=0 to skip pgvector, SLUICE_PG_PORT to
# choose the port (default: a free one).
set -euo pipefail

PG_VERSION="${PG_VERSION:-15}"
PGVECTOR_VERSION=0.8.0
BIN="/usr/lib/postgresql/$PG_VERSION/bin"

log() { echo "postgres.sh: $*" >&2; }

as_root() { [ "$(id -u)" = 0 ]; }

apt_install() {
    if ! as_root; then
        log "cannot install $* (not root): install it and run again"
        return 1
    fi
    if [ -z "${APT_UPDATED:-}" ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
}

ensure_postgres() {
    if [ -x "$BIN/initdb" ] && [ -x "$BIN/pg_ctl" ]; then
        return 0
    fi
    log "installing PostgreSQL $PG_VERSION from Debian packages"
    apt_install "postgresql-$PG_VERSION" "postgresql-client-$PG_VERSION"
}

# pgvector is not packaged for bookworm: build Debian's own source package
# (from the next release's source list) against postgresql-server-dev.
ensure_pgvector() {
    [ "${PGVECTOR:-1}" = 0 ] && return 0
    local sharedir
    sharedir="$("$BIN/pg_config" --sharedir 2>/dev/null || echo "/usr/share/postgresql/$PG_VERSION")"
    if [ -f "$sharedir/extension/vector.control" ]; then
        return 0
    fi
    if ! as_root; then
        log "pgvector is not installed and cannot be built without root: the vector tests will use real[]"
        return 0
    fi
    log "building pgvector $PGVECTOR_VERSION from Debian's source package"
    (
        set -e
        apt_install "postgresql-server-dev-$PG_VERSION" make gcc
        src=/etc/apt/sources.list.d/sluice-trixie-src.sources
        if ! apt-cache showsrc pgvector 2>/dev/null | grep -q "^Version: $PGVECTOR_VERSION"; then
            printf 'Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: trixie\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' >"$src"
            DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        fi
        work="$(mktemp -d)"
        cd "$work"
        # --download-only: no dpkg-dev needed; apt has checked the files against the signed Sources index.
        apt-get source -qq --download-only "pgvector=$PGVECTOR_VERSION-1" >&2
        tar xzf "pgvector_$PGVECTOR_VERSION.orig.tar.gz"
        cd "pgvector-$PGVECTOR_VERSION"
        # The default flags build with -march=native; plain flags run anywhere.
        make -s with_llvm=no OPTFLAGS="" PG_CONFIG="$BIN/pg_config" >&2
        make -s with_llvm=no OPTFLAGS="" PG_CONFIG="$BIN/pg_config" install >&2
        rm -rf "$work"
    ) || log "pgvector could not be built: the vector tests will use real[]"
}

free_port() {
    if [ -n "${SLUICE_PG_PORT:-}" ]; then
        echo "$SLUICE_PG_PORT"
        return
    fi
    python3 - <<'PY' 2>/dev/null && return
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
PY
    local port
    for _ in $(seq 1 200); do
        port=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return
        fi
    done
    log "no free port found"
    return 1
}

# Runs a PostgreSQL binary as the server's user.
run_pg() {
    if as_root; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

start() {
    ensure_postgres
    ensure_pgvector
    local dir port user
    dir="$(mktemp -d "${TMPDIR:-/tmp}/sluice-pg.XXXXXX")"
    if as_root; then
        user=postgres
        chown postgres: "$dir"
    else
        user="$(id -un)"
    fi
    chmod 700 "$dir"
    port="$(free_port)"
    run_pg "$BIN/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 || {
        cat "$dir/initdb.log" >&2
        return 1
    }
    run_pg "$BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=200" start >&2 || {
        cat "$dir/server.log" >&2
        return 1
    }
    log "PostgreSQL $PG_VERSION on 127.0.0.1:$port, data in $dir/data (log $dir/server.log)"
    cat <<ENV
export SLUICE_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:$port/postgres
export SLUICE_TEST_POSTGRES_DIR=$dir
export SLUICE_TEST_POSTGRES_DATA=$dir/data
export SLUICE_TEST_PG_CTL=$BIN/pg_ctl
export SLUICE_TEST_PG_USER=$user
ENV
    # The vector tests then require pgvector instead of skipping.
    if [ -f "$("$BIN/pg_config" --sharedir 2>/dev/null || echo "/usr/share/postgresql/$PG_VERSION")/extension/vector.control" ]; then
        echo "export SLUICE_TEST_PGVECTOR=1"
    fi
}

stop() {
    local dir="${1:-${SLUICE_TEST_POSTGRES_DIR:-}}"
    if [ -z "$dir" ] || [ ! -d "$dir" ]; then
        log "nothing to stop (no SLUICE_TEST_POSTGRES_DIR)"
        return 0
    fi
    if [ -f "$dir/data/postmaster.pid" ]; then
        run_pg "$BIN/pg_ctl" -D "$dir/data" -m immediate -w stop >&2 || log "pg_ctl stop failed"
    fi
    rm -rf "$dir"
    log "stopped and removed $dir"
}

case "${1:-}" in
start) start ;;
stop) stop "${2:-}" ;;
*)
    echo "usage: $0 start | stop [DIR]" >&2
    exit 2
    ;;
esac
