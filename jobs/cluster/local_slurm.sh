#!/usr/bin/env bash
# A local Slurm cluster on this machine, for the orchestration tests and for trying sweeps
# without a real cluster. Debian packages only; no systemd needed; run as root.
#
# Single node (the cluster `.ci/run` and tests/test_slurm.py use; config /etc/slurm/slurm.conf):
#   bash jobs/cluster/local_slurm.sh up       install if missing, configure, start, wait for the node
#   bash jobs/cluster/local_slurm.sh status   exit 0 only when every daemon runs and the node takes jobs
#   bash jobs/cluster/local_slurm.sh down     stop only the daemons that `up` started
#
# Multi-node (N >= 2 "hosts" on this one machine, each in its own network/UTS/mount namespace;
# see jobs/cluster/local_slurm_multinode.sh). It runs next to the single-node cluster, fully
# separate from it; its clients need SLURM_CONF, which `env` prints:
#   bash jobs/cluster/local_slurm.sh up --nodes 2       create network + namespaces, start, wait for N idle nodes
#   bash jobs/cluster/local_slurm.sh status --nodes 2   exit 0 only when every daemon runs and N nodes take jobs
#   bash jobs/cluster/local_slurm.sh down --nodes 2     cancel its jobs, stop its daemons, delete its namespaces
#   bash jobs/cluster/local_slurm.sh env --nodes 2      prints: export SLURM_CONF=...
#   bash jobs/cluster/local_slurm.sh exec --nodes 2 clickseg-node1 CMD...   run CMD "on" a node
#   eval "$(bash jobs/cluster/local_slurm.sh env --nodes 2)"; sinfo; srun -N2 hostname
#
# Env: CLICKSEG_SLURM_CPUS (CPU slots to advertise, per node in multi-node mode: more than the
# machine has is fine), CLICKSEG_SLURM_PARTITION (default debug), CLICKSEG_SLURM_NET (multi-node
# only: first three octets of its private /24, default 10.78.0). Configs are written at run time
# (from `hostname -s` and `slurmd -C` for the single node), never committed.
set -euo pipefail
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH"
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

PARTITION=${CLICKSEG_SLURM_PARTITION:-debug}
CPUS=${CLICKSEG_SLURM_CPUS:-}
MARK=/run/clickseg-slurm          # pid copies of what this script started
CONF=/etc/slurm/slurm.conf
LOGS=/var/log/slurm

say() { echo "local_slurm: $*" >&2; }
fail() { say "ERROR: $*"; exit 1; }

alive() {  # alive PID [COMM]: running, not a zombie, and (if given) with that command name
  local pid=$1 st
  [[ $pid =~ ^[0-9]+$ ]] && [ -r "/proc/$pid/stat" ] || return 1
  [ -z "${2:-}" ] || [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ] || return 1
  st=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
  [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}
pidfile_of() { case $1 in munged) echo /run/munge/munged.pid ;; *) echo "/run/$1.pid" ;; esac; }
running_pid() { local f; f=$(pidfile_of "$1"); [ -f "$f" ] && alive "$(cat "$f")" && cat "$f"; }
started_pid() { [ -f "$MARK/$1.pid" ] && alive "$(cat "$MARK/$1.pid")" && cat "$MARK/$1.pid"; }

install_packages() {  # install_packages [EXTRA_PACKAGE...]: Slurm and munge unless present, plus the extras
  local pkgs=("$@")
  if ! { [ -x /usr/sbin/slurmctld ] && [ -x /usr/sbin/slurmd ] && [ -x /usr/sbin/munged ] && command -v sbatch >/dev/null; }; then
    pkgs+=(slurmctld slurmd slurm-client munge)
  fi
  [ ${#pkgs[@]} = 0 ] && return 0
  command -v apt-get >/dev/null || fail "${pkgs[*]} not installed and apt-get is not available"
  local blocker=0
  # package scripts try to start services; there is no init system to start them with
  if [ ! -e /usr/sbin/policy-rc.d ]; then printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; blocker=1; fi
  apt-cache show slurmd >/dev/null 2>&1 || apt-get update -qq
  # the lock timeout: the other cluster's `up` may be installing the same packages right now
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${pkgs[@]}" >&2
  [ "$blocker" = 1 ] && rm -f /usr/sbin/policy-rc.d
  return 0
}

write_if_changed() {  # write_if_changed PATH TEXT: returns 0 (true) only when PATH was (re)written
  if [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]; then return 1; fi
  mkdir -p "$(dirname "$1")"
  printf '%s\n' "$2" > "$1"
}

# The slurm.conf lines both clusters share. Why: no cgroups here (proctrack/linuxproc, task/none: no
# CPU/memory enforcement); no accounting (sacct fails; submitit then says UNKNOWN); jobs start within
# a second and pending ones are retried every 5 s; CR_CPU so a job without --mem does not take the
# node's whole memory; a node set DOWN returns once its slurmd registers again; KillWait=5: submitit
# jobs ignore SIGTERM, so a cancelled one holds its CPUs for all of KillWait (default 30 s).
policy_conf() {
  cat <<CONF
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_interval=5,bf_interval=5
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
KillWait=5
CONF
}

# --- single node --------------------------------------------------------------------------

write_conf() {  # prints "changed" when the config was rewritten
  local host hw mem node
  host=$(hostname -s)
  hw=$(slurmd -C | head -n1)
  mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")
  if [ -n "$CPUS" ]; then node="NodeName=$host NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$mem State=UNKNOWN"
  else node="NodeName=$host NodeAddr=127.0.0.1 ${hw#NodeName=* } State=UNKNOWN"; fi
  local text
  text=$(cat <<CONF
# written by clickseg jobs/cluster/local_slurm.sh; regenerated on every 'up'
ClusterName=clickseg-local
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
# a requeued job may start again after cred_expire seconds (default 120)
AuthInfo=cred_expire=10
$(policy_conf)
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
$( [ -n "$CPUS" ] && echo SlurmdParameters=config_overrides )
$node
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
)
  if write_if_changed "$CONF" "$text"; then echo changed; fi
}

start() {  # start NAME CMD...: run a self-daemonizing daemon unless it already runs
  local name=$1; shift
  if [ -n "$(running_pid "$name")" ]; then return; fi
  rm -f "$(pidfile_of "$name")"
  "$@" || fail "$name did not start (logs in $LOGS)"
  local i
  for i in $(seq 100); do [ -n "$(running_pid "$name")" ] && break; sleep 0.1; done
  [ -n "$(running_pid "$name")" ] || fail "$name did not come up (logs in $LOGS)"
  running_pid "$name" > "$MARK/$name.pid"
}

stop() {  # stop NAME: only a daemon this script started
  local name=$1 pid i
  pid=$(started_pid "$name") || { rm -f "$MARK/$name.pid"; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 300); do alive "$pid" || break; sleep 0.1; done
  alive "$pid" && kill -KILL "$pid" 2>/dev/null || true
  rm -f "$MARK/$name.pid"
  say "stopped $name ($pid)"
}

node_ok() { case "$(sinfo -h -N -o %T 2>/dev/null | head -n1)" in idle*|mixed*|allocated*|completing*) return 0 ;; *) return 1 ;; esac; }

up() {
  install_packages
  mkdir -p "$MARK" "$LOGS" /var/spool/slurmctld /var/spool/slurmd
  local host; host=$(hostname -s)
  getent hosts "$host" >/dev/null || echo "127.0.0.1 $host" >> /etc/hosts   # jobs use it as rendezvous address
  [ -s /etc/munge/munge.key ] || { install -d -o munge -g munge -m 0700 /etc/munge; dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none; }
  chown munge:munge /etc/munge/munge.key; chmod 0400 /etc/munge/munge.key
  if [ "$(write_conf)" = changed ]; then stop slurmd; stop slurmctld; fi
  install -d -o munge -g munge -m 0755 /run/munge
  start munged runuser -u munge -- /usr/sbin/munged
  start slurmctld /usr/sbin/slurmctld
  start slurmd /usr/sbin/slurmd
  local i resumed=0
  for i in $(seq 300); do
    node_ok && { say "up: node $host is $(sinfo -h -N -o %T | head -n1)"; return 0; }
    if [ "$resumed" = 0 ] && sinfo -h -N -o %T 2>/dev/null | grep -Eq 'down|drain'; then
      scontrol update NodeName="$host" State=RESUME >/dev/null 2>&1 || true; resumed=1
    fi
    sleep 0.2
  done
  tail -n 20 "$LOGS/slurmctld.log" "$LOGS/slurmd.log" >&2 || true
  fail "node did not become usable"
}

down() { stop slurmd; stop slurmctld; stop munged; }

status() {
  local n rc=0
  for n in munged slurmctld slurmd; do
    if [ -n "$(running_pid "$n")" ]; then echo "$n: running ($(running_pid "$n"))"; else echo "$n: not running"; rc=1; fi
  done
  [ "$rc" = 0 ] && node_ok && sinfo && return 0
  return 1
}

# --- command line: CMD [--nodes N] [ARGS...] ------------------------------------------------
usage() { echo "usage: $0 up|status|down|env [--nodes N]   |   $0 exec --nodes N NODE CMD..." >&2; exit 2; }
cmd=${1:-}; shift || true
NODES=1
while [ $# -gt 0 ]; do
  case $1 in
    --nodes) [ $# -ge 2 ] || usage; NODES=$2; shift 2 ;;
    --nodes=*) NODES=${1#--nodes=}; shift ;;
    *) break ;;
  esac
done
[[ $NODES =~ ^[0-9]+$ ]] && [ "$NODES" -ge 1 ] || fail "--nodes needs a number >= 1, got '$NODES'"

if [ "$NODES" -ge 2 ]; then
  # shellcheck source=local_slurm_multinode.sh
  source "$HERE/local_slurm_multinode.sh"
  multinode_main "$cmd" "$@"
  exit
fi
# the default config path, set explicitly: a caller's SLURM_CONF (the multi-node cluster's, say)
# would otherwise be read by the daemons started here and by sinfo/scontrol below
export SLURM_CONF=$CONF
[ "$cmd" = env ] && { echo "export SLURM_CONF=$CONF"; exit 0; }
[ "$(id -u)" = 0 ] || fail "must run as root"
case "$cmd" in
  up) up ;; down) down ;; status) status ;;
  *) usage ;;
esac
