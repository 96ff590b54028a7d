# shellcheck shell=bash
# Make sure a MariaDB server is there for the tests; sourced by ./run-tests.
#
#   . .ci/mariadb.sh
#   novadb_mariadb_ensure     # exports NOVADB_TEST_MYSQL_URL, or returns 1
#
# In order:
#   1. NOVADB_TEST_MYSQL_URL already set: use it as it is, start nothing.
#   2. root (empty password) can log in on 127.0.0.1:3306: use that server.
#   3. Otherwise start a throwaway server: install Debian's mariadb-server first
#      if there is no mariadbd (as root, or through passwordless sudo), create a
#      data directory under $TMPDIR with mariadb-install-db, run mariadbd on
#      127.0.0.1:3307 (or the next free port), wait until it answers, and stop
#      it and delete its directory when the sourcing shell exits.
#
# Knobs: NOVADB_MARIADB_THROWAWAY=1 skips step 2; NOVADB_MARIADB_PORT picks the
# throwaway's port; NOVADB_PROBE_PYTHON is a python that can `import pymysql`
# (else the `mariadb` client is used to probe).

_novadb_mariadb_dir=""
_novadb_mariadb_pid=""

_novadb_say() { echo "==> MariaDB: $*" >&2; }

# Print the server version and succeed if root with no password can log in.
_novadb_mariadb_probe() {
    local host=$1 port=$2 py=${NOVADB_PROBE_PYTHON:-python3}
    if "$py" -c 'import pymysql' >/dev/null 2>&1; then
        "$py" - "$host" "$port" 2>/dev/null <<'EOF'
import sys

import pymysql

conn = pymysql.connect(host=sys.argv[1], port=int(sys.argv[2]), user="root", password="",
                       connect_timeout=2)
with conn.cursor() as cur:
    cur.execute("SELECT VERSION()")
    print(cur.fetchone()[0])
conn.close()
EOF
    elif command -v mariadb >/dev/null 2>&1; then
        mariadb --no-defaults --connect-timeout=2 -uroot -h"$host" -P"$port" -N -B \
            -e 'SELECT VERSION()' 2>/dev/null
    else
        return 1
    fi
}

# Something is listening on 127.0.0.1:$1.
_novadb_port_busy() {
    timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" >/dev/null 2>&1
}

# First of the given program names found on PATH or in the sbin directories.
_novadb_find_prog() {
    local name dir
    for name in "$@"; do
        if command -v "$name" >/dev/null 2>&1; then
            command -v "$name"
            return 0
        fi
        for dir in /usr/sbin /usr/local/sbin /sbin /usr/libexec; do
            if [ -x "$dir/$name" ]; then
                echo "$dir/$name"
                return 0
            fi
        done
    done
    return 1
}

_novadb_install_mariadb() {
    local sudo=()
    if [ "$(id -u)" != 0 ]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
            sudo=(sudo -n)
        else
            _novadb_say "mariadbd is not installed and this is not root: install Debian's" \
                "mariadb-server (or set NOVADB_TEST_MYSQL_URL)"
            return 1
        fi
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        _novadb_say "mariadbd is not installed and there is no apt-get: install MariaDB" \
            "(or set NOVADB_TEST_MYSQL_URL)"
        return 1
    fi
    _novadb_say "installing Debian's mariadb-server"
    "${sudo[@]}" apt-get update -q >&2 || return 1
    # The package's own service start may fail where there is no init system;
    # only the binaries matter here, so judge by what is installed afterwards.
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends mariadb-server >&2 \
        || _novadb_say "apt-get install exited non-zero; checking what got installed"
}

novadb_mariadb_stop() {
    local pid=$_novadb_mariadb_pid dir=$_novadb_mariadb_dir i
    _novadb_mariadb_pid=""
    _novadb_mariadb_dir=""
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        _novadb_say "stopping the throwaway server (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 60; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.5
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    if [ -n "$dir" ]; then
        rm -rf "$dir"
    fi
}

_novadb_mariadb_start() {
    local mariadbd install_db port user dir version i
    local timeout=${NOVADB_MARIADB_START_TIMEOUT:-30}

    if ! mariadbd=$(_novadb_find_prog mariadbd mysqld); then
        _novadb_install_mariadb || return 1
        mariadbd=$(_novadb_find_prog mariadbd mysqld) || {
            _novadb_say "mariadbd is still missing after installing mariadb-server"
            return 1
        }
    fi
    install_db=$(_novadb_find_prog mariadb-install-db mysql_install_db) || {
        _novadb_say "found $mariadbd but no mariadb-install-db"
        return 1
    }

    port=${NOVADB_MARIADB_PORT:-}
    if [ -z "$port" ]; then
        for ((port = 3307; port < 3330; port++)); do
            _novadb_port_busy "$port" || break
        done
    fi
    if _novadb_port_busy "$port"; then
        _novadb_say "port $port is already taken; set NOVADB_MARIADB_PORT to a free one"
        return 1
    fi

    user=$(id -un)
    dir=$(mktemp -d "${TMPDIR:-/tmp}/novadb-mariadb.XXXXXX")
    _novadb_mariadb_dir=$dir
    trap novadb_mariadb_stop EXIT
    trap 'novadb_mariadb_stop; exit 130' INT
    trap 'novadb_mariadb_stop; exit 143' TERM

    _novadb_say "starting a throwaway server on 127.0.0.1:$port (data in $dir)"
    if ! "$install_db" --no-defaults --user="$user" --auth-root-authentication-method=normal \
        --skip-test-db --datadir="$dir/datadir" >"$dir/install.log" 2>&1; then
        _novadb_say "mariadb-install-db failed:"
        cat "$dir/install.log" >&2
        return 1
    fi
    # Same character set as Debian's packaged server; durability traded for speed.
    "$mariadbd" --no-defaults --user="$user" --datadir="$dir/datadir" --tmpdir="$dir" \
        --socket="$dir/mariadbd.sock" --pid-file="$dir/mariadbd.pid" \
        --log-error="$dir/error.log" --port="$port" --bind-address=127.0.0.1 \
        --character-set-server=utf8mb4 --collation-server=utf8mb4_general_ci \
        --innodb-flush-log-at-trx-commit=2 --innodb-doublewrite=0 \
        </dev/null >"$dir/stdout.log" 2>&1 &
    _novadb_mariadb_pid=$!

    for ((i = 0; i < timeout * 2; i++)); do
        if version=$(_novadb_mariadb_probe 127.0.0.1 "$port"); then
            export NOVADB_TEST_MYSQL_URL="mysql+pymysql://root@127.0.0.1:$port/"
            _novadb_say "using a throwaway $version on 127.0.0.1:$port" \
                "(pid $_novadb_mariadb_pid, stopped on exit)"
            return 0
        fi
        if ! kill -0 "$_novadb_mariadb_pid" 2>/dev/null; then
            _novadb_say "mariadbd exited during start-up:"
            tail -n 30 "$dir/error.log" >&2 || true
            novadb_mariadb_stop
            return 1
        fi
        sleep 0.5
    done
    _novadb_say "mariadbd did not answer on 127.0.0.1:$port within ${timeout}s:"
    tail -n 30 "$dir/error.log" >&2 || true
    novadb_mariadb_stop
    return 1
}

novadb_mariadb_ensure() {
    local version
    if [ -n "${NOVADB_TEST_MYSQL_URL:-}" ]; then
        # Shown without its password.
        _novadb_say "using NOVADB_TEST_MYSQL_URL=$(sed -E 's#(://[^:/@]*):[^@]*@#\1:***@#' \
            <<<"$NOVADB_TEST_MYSQL_URL")"
        return 0
    fi
    if [ "${NOVADB_MARIADB_THROWAWAY:-0}" != 1 ] \
        && version=$(_novadb_mariadb_probe 127.0.0.1 3306); then
        export NOVADB_TEST_MYSQL_URL="mysql+pymysql://root@127.0.0.1:3306/"
        _novadb_say "using the running $version on 127.0.0.1:3306 (root, no password)"
        return 0
    fi
    if [ "${NOVADB_MARIADB_THROWAWAY:-0}" != 1 ]; then
        _novadb_say "nothing on 127.0.0.1:3306 lets root in without a password"
    fi
    _novadb_mariadb_start
}
