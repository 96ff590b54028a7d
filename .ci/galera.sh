# shellcheck shell=bash
# Make sure the Galera test tier can start its cluster; sourced by ./run-tests.
#
#   . .ci/galera.sh
#   novadb_galera_ensure      # returns 1 when the packages cannot be had
#
# The tier (tests/galera/) starts a throw-away 3-node MariaDB Galera cluster on
# 127.0.0.1 with tests/galera/cluster.sh: it needs mariadbd and
# mariadb-install-db (Debian's mariadb-server), the Galera provider
# libgalera_smm.so (galera-4), rsync and socat (the SST), ss (iproute2) and the
# mariadb client.  Whatever is missing is installed with apt-get (as root, or
# through passwordless sudo).

_novadb_galera_say() { echo "==> Galera: $*" >&2; }

_novadb_galera_missing() {
    local missing=()
    command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || missing+=(mariadb-server)
    command -v mariadb-install-db >/dev/null 2>&1 || missing+=(mariadb-server)
    command -v mariadb >/dev/null 2>&1 || missing+=(mariadb-client)
    [ -f /usr/lib/galera/libgalera_smm.so ] || [ -f /usr/lib/galera-4/libgalera_smm.so ] \
        || [ -f /usr/lib/libgalera_smm.so ] || missing+=(galera-4)
    command -v rsync >/dev/null 2>&1 || missing+=(rsync)
    command -v socat >/dev/null 2>&1 || missing+=(socat)
    command -v ss >/dev/null 2>&1 || missing+=(iproute2)
    command -v lsof >/dev/null 2>&1 || missing+=(lsof)
    printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' '
}

novadb_galera_ensure() {
    local missing sudo=()
    missing=$(_novadb_galera_missing)
    if [ -z "${missing// /}" ]; then
        return 0
    fi
    if [ "$(id -u)" != 0 ]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
            sudo=(sudo -n)
        else
            _novadb_galera_say "missing $missing and this is not root: install them"
            return 1
        fi
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        _novadb_galera_say "missing $missing and there is no apt-get: install them"
        return 1
    fi
    _novadb_galera_say "installing $missing"
    "${sudo[@]}" apt-get update -q >&2 || return 1
    # shellcheck disable=SC2086  # a list of package names
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends $missing >&2 \
        || _novadb_galera_say "apt-get install exited non-zero; checking what got installed"
    missing=$(_novadb_galera_missing)
    if [ -n "${missing// /}" ]; then
        _novadb_galera_say "still missing after apt-get: $missing"
        return 1
    fi
}
