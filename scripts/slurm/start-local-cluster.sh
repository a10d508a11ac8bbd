#!/usr/bin/env bash
# start-local-cluster.sh - install, configure and start a REAL single-node SLURM cluster for the tests
# (Debian 12 bookworm, slurm-wlm 22.05, run as root, no systemd needed).
#
#   start-local-slurm.sh          install (if needed) + configure + start + wait until the node is idle
#   start-local-slurm.sh stop     stop the daemons this script started (by PID file, never by name)
#   start-local-slurm.sh status   show daemons / sinfo
#
# Idempotent: re-running skips the install, keeps daemons that are already running
# and restarts them only if the generated config changed.
#
# Environment knobs:
#   SLURM_ACCOUNTING=1  (default) also run MariaDB + slurmdbd so that `sacct` works.
#                       submitit polls `sacct` for job states; without it job.state stays
#                       "UNKNOWN" and job.result() of a job killed/cancelled by SLURM
#                       (no result pickle) waits forever.
#   SLURM_ACCOUNTING=0  no database: ~190 MB less to install, sacct prints
#                       "Slurm accounting storage is disabled".
#   SLURM_CPUS=N        CPUs advertised for the node (default: nproc). N > nproc
#                       oversubscribes the machine (SlurmdParameters=config_overrides),
#                       useful if tests ask for more cpus_per_task than the box has.
#   SLURM_PARTITION     partition name (default: debug; it is the default partition).
#   SLURM_WAIT_S        how long to wait for the node to become idle (default 60).
set -euo pipefail

ACCOUNTING=${SLURM_ACCOUNTING:-1}
PARTITION=${SLURM_PARTITION:-debug}
WAIT_S=${SLURM_WAIT_S:-60}
ETC=/etc/slurm
LOGDIR=/var/log/slurm
STATE=/var/lib/slurm

log() { echo "[start_slurm $(date +%T)] $*" >&2; }

# alive PIDFILE COMM -> true if the pid in PIDFILE runs, is not a zombie and is COMM.
# (PID 1 of this VM is not an init that reaps orphans promptly: a stopped daemon can
#  linger as a zombie, and `kill -0` alone would report it alive.)
alive() {
  local pid
  [ -s "$1" ] || return 1
  pid=$(cat "$1" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ -r "/proc/$pid/status" ] || return 1
  grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" && return 1
  [ "$(cat /proc/"$pid"/comm 2>/dev/null)" = "$2" ]
}

came_up() {  # came_up PIDFILE COMM: a daemon just launched writes its pid file only once it has
  # forked and initialised, so "no pid file yet" is not "died": allow it 10 s to appear
  local i
  for i in $(seq 100); do alive "$1" "$2" && return 0; sleep 0.1; done
  log "$2 did not come up (no live pid in $1 after 10 s)"; tail -20 "$LOGDIR/$2.log" >&2; exit 1
}

stop_one() {  # stop_one PIDFILE COMM
  local pid i
  alive "$1" "$2" || return 0
  pid=$(cat "$1")
  log "stopping $2 (pid $pid)"
  kill "$pid" 2>/dev/null || true
  for i in $(seq 100); do alive "$1" "$2" || return 0; sleep 0.1; done
  log "$2 did not stop in 10 s, sending SIGKILL"
  kill -9 "$pid" 2>/dev/null || true
}

stop_all() {
  stop_one /run/slurmd.pid slurmd
  stop_one /run/slurmctld.pid slurmctld
  stop_one /run/slurmdbd.pid slurmdbd
  stop_one /run/mysqld/mysqld.pid mariadbd
  stop_one /run/munge/munged.pid munged
}

case "${1:-start}" in
  stop) stop_all; exit 0 ;;
  status)
    for d in "munged /run/munge/munged.pid" "mariadbd /run/mysqld/mysqld.pid" "slurmdbd /run/slurmdbd.pid" \
             "slurmctld /run/slurmctld.pid" "slurmd /run/slurmd.pid"; do
      set -- $d; if alive "$2" "$1"; then echo "$1 running (pid $(cat "$2"))"; else echo "$1 not running"; fi
    done
    sinfo 2>&1 || true; exit 0 ;;
  start) ;;
  *) echo "usage: $0 [start|stop|status]" >&2; exit 2 ;;
esac

T0=$(date +%s%N)
elapsed() { local ms=$(( ($(date +%s%N) - T0) / 1000000 )); printf "%d.%03d s" $((ms / 1000)) $((ms % 1000)); }

# ---------------------------------------------------------------- 1. install
PKGS=(slurmctld slurmd slurm-client munge)
[ "$ACCOUNTING" = 1 ] && PKGS+=(slurmdbd mariadb-server)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Postinst scripts try invoke-rc.d/systemctl; /usr/sbin/policy-rc.d (exit 101) or the
  # missing systemd just make that a no-op - we start the daemons ourselves below.
  apt_install() {
    apt-get install -y -q --no-install-recommends -o Dpkg::Options::=--force-unsafe-io "${missing[@]}" >/tmp/start_slurm.apt.log 2>&1
  }
  # Try with the package lists already on the machine first; update only if that fails.
  if [ -z "$(ls -A /var/lib/apt/lists/ 2>/dev/null | grep -v -e lock -e partial)" ] || ! apt_install; then
    apt-get update -q >/tmp/start_slurm.apt-update.log 2>&1
    apt_install || { tail -30 /tmp/start_slurm.apt.log >&2; exit 1; }
  fi
  log "install done ($(elapsed))"
fi

# ---------------------------------------------------------------- 2. configure
NODE=$(hostname -s)
REAL_CPUS=$(nproc)
CPUS=${SLURM_CPUS:-$REAL_CPUS}
MEM_MB=$(awk '/^MemTotal:/ {print int($2/1024)}' /proc/meminfo)   # == `slurmd -C` RealMemory

mkdir -p "$ETC" "$LOGDIR" "$STATE/slurmctld" "$STATE/slurmd"
if [ "$CPUS" = "$REAL_CPUS" ]; then
  # exact topology as slurmd detects it, e.g. "CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1"
  NODE_HW=$(slurmd -C | head -1 | sed 's/^NodeName=[^ ]* //; s/ RealMemory=.*//')
  EXTRA=""
else
  NODE_HW="CPUs=$CPUS Boards=1 SocketsPerBoard=1 CoresPerSocket=$CPUS ThreadsPerCore=1"
  EXTRA="SlurmdParameters=config_overrides"   # trust slurm.conf, not the detected hardware
fi
if [ "$ACCOUNTING" = 1 ]; then
  ACCT="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost"
else
  ACCT="AccountingStorageType=accounting_storage/none"
fi

NEW_CONF=$(cat <<CONF
# generated by start-local-slurm.sh
ClusterName=ci
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# cred_expire also sets how long a requeued job waits before it may start again
# (default 120 s -> submitit preemption/timeout requeue tests take > 2 min).
AuthInfo=cred_expire=10
StateSaveLocation=$STATE/slurmctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOGDIR/slurmctld.log
SlurmdLogFile=$LOGDIR/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
# no cgroups in this VM/container: track processes via /proc, no task binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
$ACCT
MpiDefault=none
SchedulerType=sched/backfill
# start jobs right away (default batch_sched_delay=3 s, sched_interval=60 s, bf_interval=30 s)
SchedulerParameters=batch_sched_delay=0,sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# SIGTERM -> SIGKILL grace on cancel/timeout (default 30 s; submitit ignores SIGTERM)
KillWait=5
ReturnToService=2
# reject (instead of queueing forever with Reason=PartitionConfig) jobs asking for more
# CPUs/memory/nodes than exist: sbatch fails -> submitit raises instead of hanging
EnforcePartLimits=ALL
$EXTRA
NodeName=$NODE NodeAddr=127.0.0.1 $NODE_HW RealMemory=$MEM_MB State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
)
conf_changed=0
if [ "$(cat "$ETC/slurm.conf" 2>/dev/null)" != "$NEW_CONF" ]; then
  printf '%s\n' "$NEW_CONF" > "$ETC/slurm.conf"; conf_changed=1
fi

if [ "$ACCOUNTING" = 1 ]; then
  NEW_DBD=$(cat <<CONF
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
LogFile=$LOGDIR/slurmdbd.log
PidFile=/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
CONF
)
  if [ "$(cat "$ETC/slurmdbd.conf" 2>/dev/null)" != "$NEW_DBD" ]; then
    printf '%s\n' "$NEW_DBD" > "$ETC/slurmdbd.conf"
    stop_one /run/slurmdbd.pid slurmdbd
  fi
  chmod 600 "$ETC/slurmdbd.conf"   # slurmdbd refuses a group/world readable config
else
  stop_one /run/slurmdbd.pid slurmdbd; stop_one /run/mysqld/mysqld.pid mariadbd
fi

if [ "$conf_changed" = 1 ]; then   # running daemons must see the same slurm.conf
  stop_one /run/slurmd.pid slurmd
  stop_one /run/slurmctld.pid slurmctld
fi

# ---------------------------------------------------------------- 3. start
# munge (auth for every slurm RPC); must run as user munge
if ! alive /run/munge/munged.pid munged; then
  [ -s /etc/munge/munge.key ] || { mungekey --create --keyfile=/etc/munge/munge.key; }
  chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key
  install -d -o munge -g munge -m 755 /run/munge
  runuser -u munge -- /usr/sbin/munged --force    # --force: tolerate a stale socket
  log "munged started"
fi

if [ "$ACCOUNTING" = 1 ]; then
  if ! alive /run/mysqld/mysqld.pid mariadbd; then
    install -d -o mysql -g mysql -m 755 /run/mysqld /var/log/mysql
    setsid /usr/sbin/mariadbd --user=mysql --skip-networking \
      --socket=/run/mysqld/mysqld.sock --pid-file=/run/mysqld/mysqld.pid \
      --innodb-lock-wait-timeout=900 --log-error=/var/log/mysql/error.log \
      </dev/null >/dev/null 2>&1 &
    for i in $(seq 300); do mariadb-admin ping >/dev/null 2>&1 && break; sleep 0.1; done
    mariadb-admin ping >/dev/null 2>&1 || { tail -20 /var/log/mysql/error.log >&2; exit 1; }
    log "mariadb started"
  fi
  mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
              CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
              GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
  if ! alive /run/slurmdbd.pid slurmdbd; then
    /usr/sbin/slurmdbd     # daemonizes, writes /run/slurmdbd.pid
    came_up /run/slurmdbd.pid slurmdbd
    log "slurmdbd started"
  fi
  # slurmdbd must answer BEFORE slurmctld starts: on a fresh state dir slurmctld otherwise
  # dies with "fatal: You are running with a database but for some reason we have no TRES".
  dbd_deadline=$(( $(date +%s) + WAIT_S ))
  until sacctmgr -n -P list cluster >/dev/null 2>&1; do
    alive /run/slurmdbd.pid slurmdbd || { log "slurmdbd died"; tail -20 "$LOGDIR/slurmdbd.log" >&2; exit 1; }
    [ "$(date +%s)" -lt "$dbd_deadline" ] || { log "slurmdbd not answering"; exit 1; }
    sleep 0.1
  done
fi

if ! alive /run/slurmctld.pid slurmctld; then
  /usr/sbin/slurmctld     # daemonizes, writes /run/slurmctld.pid
  came_up /run/slurmctld.pid slurmctld
  log "slurmctld started"
fi
SLURMD_T=""
if ! alive /run/slurmd.pid slurmd; then
  SLURMD_T=$(date +%FT%T)
  /usr/sbin/slurmd -N "$NODE"
  came_up /run/slurmd.pid slurmd
  log "slurmd started"
fi

# ---------------------------------------------------------------- 4. wait for the node
# deadline based: sinfo itself blocks ~9 s when slurmctld is not up
deadline=$(( $(date +%s) + WAIT_S )); resumed=0; st=""
while :; do
  for d in slurmctld slurmd; do
    alive /run/$d.pid $d || { log "$d died"; tail -20 "$LOGDIR/$d.log" >&2; exit 1; }
  done
  st=$(sinfo -h -n "$NODE" -o %T 2>/dev/null || true)
  # a restarted slurmctld reports the node state saved from the last run ("idle") before
  # the new slurmd has registered: also require SlurmdStartTime >= when we started slurmd
  reg=ok
  if [ -n "$SLURMD_T" ]; then
    t=$(scontrol show node "$NODE" -o 2>/dev/null | grep -o 'SlurmdStartTime=[^ ]*' | cut -d= -f2 || true)
    [[ -n "$t" && ! "$t" < "$SLURMD_T" ]] || reg=no
  fi
  case "$st/$reg" in
    idle/ok|mixed/ok|allocated/ok|completing/ok) break ;;
    down*|drain*|fail*)   # e.g. left DOWN/DRAINED by an earlier run
      if [ $resumed = 0 ]; then scontrol update NodeName="$NODE" State=RESUME 2>/dev/null || true; resumed=1; fi ;;
  esac
  if [ "$(date +%s)" -ge "$deadline" ]; then
    log "node $NODE not ready after ${WAIT_S}s (state '$st')"; sinfo -R >&2 || true
    tail -20 "$LOGDIR/slurmctld.log" "$LOGDIR/slurmd.log" >&2 || true; exit 1
  fi
  sleep 0.1
done
if [ "$ACCOUNTING" = 1 ]; then   # slurmctld registers the cluster in slurmdbd at startup
  until sacct -n -X -S now >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || { log "sacct not working"; sacct -n -X -S now; exit 1; }
    sleep 0.1
  done
fi
log "slurm ready: node $NODE $st, partition $PARTITION, $CPUS CPUs, ${MEM_MB} MB ($(elapsed))"
sinfo
