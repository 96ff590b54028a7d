#!/usr/bin/env bash
# A throw-away 3-node MariaDB Galera cluster on 127.0.0.1 for the Galera test tier
# (tests/galera/conftest.py starts it once per session and stops it at the end).
# Usage: galera.sh start | stop | status | kill N | start-node N [expected_size]
#   start       fresh datadirs, bootstrap node1, join 2+3, wait for size=3/Synced/ready
#               (on failure: nodes are stopped, logs kept in $GALERA_BASE)
#   stop        SIGTERM all nodes (clean shutdown), wait, rm -rf $GALERA_BASE
#   kill N      kill -9 node N (failure tests);  start-node N: rejoin it (IST)
# Runs mariadbd as the calling user.  Needs: mariadb-server (which on Debian
# pulls galera-4, rsync, socat, lsof, iproute2), mariadb-client; .ci/galera.sh
# installs them where they are missing.
# Env: GALERA_BASE (default ${TMPDIR:-/tmp}/novadb-galera)
#      GALERA_SQL_PORT   first SQL port   (default 13306 -> 13306,13307,13308)
#      GALERA_GCOMM_PORT first group port (default 14567 -> 14567,14577,14587;
#                        IST = +1, SST(rsync) = +2 of each)
#      GALERA_TIMEOUT    seconds to wait for cluster_size=3 (default 120)
#      GALERA_SEED       sst (default) | copy   (see below)
#      GALERA_TUNING     evs.* provider options (default: fast loopback timeouts)
#      GALERA_EXTRA_PROVIDER_OPTIONS  appended to wsrep_provider_options
#      GALERA_KEEP=1     stop keeps $GALERA_BASE (logs)
set -euo pipefail

BASE=${GALERA_BASE:-${TMPDIR:-/tmp}/novadb-galera}
RUN_AS=$(id -un)
SQLP=${GALERA_SQL_PORT:-13306}
GCP=${GALERA_GCOMM_PORT:-14567}
TIMEOUT=${GALERA_TIMEOUT:-120}
# faster joins and faster eviction of a kill -9'd node on loopback (defaults:
# join_retrans PT1S, suspect PT5S, inactive PT15S, install PT7.5S)
TUNING=${GALERA_TUNING-evs.join_retrans_period=PT0.2S;evs.keepalive_period=PT0.5S;evs.suspect_timeout=PT2S;evs.inactive_timeout=PT4S;evs.install_timeout=PT4S}
SEED=${GALERA_SEED:-sst}   # sst: joiners get an rsync SST; copy: clone a bootstrapped datadir (joiners need only IST)
NODES=3
PROVIDER=${GALERA_PROVIDER:-}
if [[ -z $PROVIDER ]]; then
  for p in /usr/lib/galera/libgalera_smm.so /usr/lib/libgalera_smm.so /usr/lib/galera-4/libgalera_smm.so; do
    [[ -f $p ]] && { PROVIDER=$p; break; }
  done
fi
MARIADBD=$(command -v mariadbd || echo /usr/sbin/mariadbd)

# The rsync SST daemon a root mariadbd starts runs as "nobody" (see cmd_start).
give_to_rsync() { if [[ $(id -u) == 0 ]]; then chown -R nobody "$1"; fi; }
log() { printf '[galera %s] %s\n' "$(date +%T)" "$*" >&2; }
sql_port()   { echo $((SQLP + $1 - 1)); }
gcomm_port() { echo $((GCP + 10 * ($1 - 1))); }
ist_port()   { echo $(( $(gcomm_port "$1") + 1 )); }
sst_port()   { echo $(( $(gcomm_port "$1") + 2 )); }
ndir()       { echo "$BASE/node$1"; }
q() { # q NODE SQL  -> tab separated, no headers
  mariadb --no-defaults -h127.0.0.1 -P"$(sql_port "$1")" -uroot --connect-timeout=2 -N -B -e "$2"
}
# launch.pid is written by us at launch (mariadbd.pid appears only after SST/init)
pid_of() { local f; f="$(ndir "$1")/launch.pid"; [[ -s $f ]] && cat "$f" || true; }
# a killed mariadbd is re-parented to init; until reaped it is a zombie, which
# kill -0 still "finds": treat state Z as dead
pid_alive() { [[ -n $1 ]] && kill -0 "$1" 2>/dev/null && [[ $(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) != Z ]]; }
alive()  { pid_alive "$(pid_of "$1")"; }

write_cnf() {
  local i=$1 d; d=$(ndir "$i")
  local addr="" j
  for j in $(seq 1 $NODES); do addr+="127.0.0.1:$(gcomm_port "$j"),"; done
  addr=${addr%,}
  cat > "$d/my.cnf" <<CNF
[mysqld]
user=$RUN_AS
datadir=$d/data
socket=$d/mariadbd.sock
pid-file=$d/mariadbd.pid
log-error=$d/error.log
port=$(sql_port "$i")
bind-address=127.0.0.1
skip-name-resolve
# keep it light
innodb_buffer_pool_size=32M
innodb_log_file_size=16M
innodb_log_buffer_size=2M
innodb_flush_log_at_trx_commit=2
innodb_doublewrite=0
innodb_use_native_aio=0
performance_schema=OFF
key_buffer_size=1M
aria_pagecache_buffer_size=8M
max_connections=64
table_open_cache=256
thread_cache_size=4
# galera requirements
binlog_format=ROW
default_storage_engine=InnoDB
innodb_autoinc_lock_mode=2
wsrep_on=ON
wsrep_provider=$PROVIDER
wsrep_cluster_name=novadb_test
wsrep_cluster_address=gcomm://$addr
wsrep_node_name=node$i
wsrep_node_address=127.0.0.1:$(gcomm_port "$i")
wsrep_node_incoming_address=127.0.0.1:$(sql_port "$i")
wsrep_sst_method=rsync
wsrep_sst_receive_address=127.0.0.1:$(sst_port "$i")
wsrep_slave_threads=1
wsrep_provider_options="gmcast.listen_addr=tcp://127.0.0.1:$(gcomm_port "$i");ist.recv_addr=127.0.0.1:$(ist_port "$i");gcache.size=16M;gcache.page_size=16M;$TUNING${GALERA_EXTRA_PROVIDER_OPTIONS:+;$GALERA_EXTRA_PROVIDER_OPTIONS}"

[sst]
# nothing needed for rsync
CNF
}

launch() { # launch NODE [extra args]
  local i=$1; shift; local d; d=$(ndir "$i")
  setsid "$MARIADBD" --defaults-file="$d/my.cnf" "$@" </dev/null >>"$d/stdout.log" 2>&1 &
  echo $! >"$d/launch.pid"
}

wait_node() { # wait until node reports size=3 & ready=ON (or given size)
  local i=$1 want=${2:-$NODES} deadline=$(( $(date +%s) + TIMEOUT )) out
  while :; do
    out=$(q "$i" "select variable_value from information_schema.global_status where variable_name in ('wsrep_cluster_size','wsrep_ready','wsrep_local_state_comment') order by variable_name" 2>/dev/null | tr '\n' ' ' || true)
    # order: wsrep_cluster_size, wsrep_local_state_comment, wsrep_ready
    if [[ $out == "$want Synced ON " ]]; then return 0; fi
    local j
    for j in $(seq 1 $NODES); do
      if [[ -s $(ndir "$j")/launch.pid ]] && ! alive "$j"; then
        log "node$j died; tail of its error log:"; tail -n 30 "$(ndir "$j")/error.log" >&2 || true; return 1
      fi
    done
    if (( $(date +%s) > deadline )); then log "timeout waiting for node$i (got: $out)"; return 1; fi
    sleep 0.2
  done
}

fail() { log "start failed; stopping nodes, logs kept in $BASE"; GALERA_KEEP=1 cmd_stop; exit 1; }

port_busy() { ss -Hltn "sport = :$1" | grep -q . ; }

cmd_start() {
  [[ -n $PROVIDER ]] || { log "libgalera_smm.so not found (apt-get install galera-4)"; exit 1; }
  command -v rsync >/dev/null || { log "rsync missing (apt-get install rsync)"; exit 1; }
  local i p
  for i in $(seq 1 $NODES); do
    if alive "$i"; then log "node$i already running (pid $(pid_of "$i")); run stop first"; exit 1; fi
    for p in "$(sql_port "$i")" "$(gcomm_port "$i")" "$(ist_port "$i")" "$(sst_port "$i")"; do
      port_busy "$p" && { log "port $p already in use"; exit 1; }
    done
  done
  rm -rf "$BASE"; mkdir -p "$BASE"
  local t0=$SECONDS
  mkdir -p "$(ndir 1)"
  write_cnf 1
  mariadb-install-db --defaults-file="$(ndir 1)/my.cnf" --wsrep-on=OFF --skip-test-db \
      --auth-root-authentication-method=normal --user="$RUN_AS" >"$(ndir 1)/install-db.log" 2>&1 \
    || { log "mariadb-install-db failed"; cat "$(ndir 1)/install-db.log" >&2; fail; }
  if [[ $SEED == copy ]]; then
    # Give node1 a Galera history (bootstrap, then clean shutdown), and clone that
    # datadir: joiners then have the group's uuid:seqno and need no SST at all.
    launch 1 --wsrep-new-cluster
    wait_node 1 1 || fail
    stop_pids "$(pid_of 1)"
    for i in $(seq 2 $NODES); do
      mkdir -p "$(ndir "$i")"; write_cnf "$i"
      cp -a "$(ndir 1)/data" "$(ndir "$i")/data"
      # gvwstate.dat holds node1's own node UUID: a clone must not keep it
      rm -f "$(ndir "$i")/data/gvwstate.dat" "$(ndir "$i")/data/galera.cache"
      sed -i 's/^safe_to_bootstrap:.*/safe_to_bootstrap: 0/' "$(ndir "$i")/data/grastate.dat"
      give_to_rsync "$(ndir "$i")/data"   # only matters if an rsync SST happens later
    done
  else
    for i in $(seq 2 $NODES); do
      mkdir -p "$(ndir "$i")"; write_cnf "$i"
      cp -a "$(ndir 1)/data" "$(ndir "$i")/data"   # SST (rsync) will replace it anyway
      # Pitfall: wsrep_sst_rsync starts an rsync *daemon* on the joiner; started by a
      # root mariadbd, rsyncd drops to uid "nobody" (its rsync_sst.conf sets no uid)
      # and cannot write a root-owned 0700 datadir:
      #   rsync: [Receiver] ERROR: cannot stat destination "." (in rsync_sst): Permission denied (13)
      # mariadbd prepends its own bin dir to PATH for SST scripts, so a PATH shim
      # for rsync does not work.  Hand the joiner datadir to nobody instead
      # (root mariadbd can still use it).  Parent dirs may stay 0700 (rsyncd
      # chdirs into the module path before dropping privileges).
      give_to_rsync "$(ndir "$i")/data"
    done
  fi
  log "datadirs initialised in $((SECONDS - t0))s"
  launch 1 --wsrep-new-cluster
  wait_node 1 1 || fail
  log "node1 bootstrapped ($((SECONDS - t0))s)"
  for i in $(seq 2 $NODES); do launch "$i"; done
  for i in $(seq 1 $NODES); do wait_node "$i" || fail; done
  log "cluster up: size=$NODES on SQL ports $(sql_port 1)-$(sql_port $NODES) ($((SECONDS - t0))s)"
}

stop_pids() { # SIGTERM (clean shutdown), SIGKILL after 60 s
  local p deadline=$(( SECONDS + ${GALERA_STOP_TIMEOUT:-60} ))
  for p in "$@"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "$@"; do
    while pid_alive "$p"; do
      if (( SECONDS > deadline )); then log "pid $p did not stop in time; SIGKILL"; kill -KILL "$p" 2>/dev/null || true; deadline=$(( SECONDS + 3600 )); fi
      sleep 0.1
    done
  done
}

cmd_stop() {
  local i p pids=()
  for i in $(seq $NODES -1 1); do
    p=$(pid_of "$i")
    if [[ -n $p ]] && kill -0 "$p" 2>/dev/null; then pids+=("$p"); fi
  done
  stop_pids "${pids[@]}"
  # leftover rsync SST daemons started from our datadirs (match on our base dir only)
  if [[ -d $BASE ]]; then
    for f in "$BASE"/node*/data/rsync_sst.pid; do
      [[ -s $f ]] && kill -TERM "$(cat "$f")" 2>/dev/null || true
    done
  fi
  if [[ -n ${GALERA_KEEP:-} ]]; then log "stopped; kept $BASE (GALERA_KEEP)"; else rm -rf "$BASE"; log "stopped; removed $BASE"; fi
}

# kill -9 a node (for failure tests)
cmd_kill() {
  local i=${1:?node number}; local p; p=$(pid_of "$i")
  [[ -n $p ]] && kill -KILL "$p" 2>/dev/null || true
  while pid_alive "$p"; do sleep 0.05; done
}

# (re)start one node into the running cluster, e.g. after cmd_kill.
cmd_start_node() {
  local i=${1:?node number}; local d; d=$(ndir "$i")
  alive "$i" && { log "node$i already running"; return 0; }
  # after kill -9 grastate.dat has seqno -1: recover the position from InnoDB
  # (what mysqld_safe/galera_recovery do) so the node can use IST, not SST
  local pos=() rp
  if grep -q '^seqno: *-1' "$d/data/grastate.dat" 2>/dev/null; then
    "$MARIADBD" --defaults-file="$d/my.cnf" --wsrep-recover --log-error="$d/recover.log" >/dev/null 2>&1 || true
    rp=$(sed -n 's/.*WSREP: Recovered position: *\([0-9a-f-]*:[0-9-]*\).*/\1/p' "$d/recover.log" | tail -n1)
    [[ -n $rp && $rp != *:-1 ]] && pos=(--wsrep-start-position="$rp")
    log "node$i recovered position: ${rp:-none}"
  fi
  give_to_rsync "$d/data"   # see rsync SST pitfall above, in case SST is needed
  launch "$i" "${pos[@]}"
  wait_node "$i" "${2:-$NODES}"
}

cmd_status() {
  local i
  for i in $(seq 1 $NODES); do
    if alive "$i"; then
      printf 'node%s pid=%s port=%s %s\n' "$i" "$(pid_of "$i")" "$(sql_port "$i")" \
        "$(q "$i" "select group_concat(concat(variable_name,'=',variable_value) separator ' ') from information_schema.global_status where variable_name in ('wsrep_cluster_size','wsrep_ready','wsrep_local_state_comment','wsrep_cluster_status')" 2>/dev/null || echo unreachable)"
    else
      printf 'node%s down\n' "$i"
    fi
  done
}

case ${1:-} in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  kill) cmd_kill "${2:-}" ;;
  start-node) cmd_start_node "${2:-}" "${3:-}" ;;
  *) echo "usage: $0 start|stop|status|kill N|start-node N [expected_size]" >&2; exit 2 ;;
esac
