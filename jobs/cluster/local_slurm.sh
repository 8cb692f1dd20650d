#!/usr/bin/env bash
# A single-node Slurm cluster on this machine, for the orchestration tests and for trying
# sweeps without a real cluster. Debian packages only; no systemd needed; run as root.
#
#   bash jobs/cluster/local_slurm.sh up       install if missing, configure, start, wait for the node
#   bash jobs/cluster/local_slurm.sh status   exit 0 only when every daemon runs and the node takes jobs
#   bash jobs/cluster/local_slurm.sh down     stop only the daemons that `up` started
#
# Env: CLICKSEG_SLURM_CPUS (advertise more CPU slots than the machine has), CLICKSEG_SLURM_PARTITION
# (default debug). The config is written at run time from `hostname -s` and `slurmd -C`.
set -euo pipefail
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH"

PARTITION=${CLICKSEG_SLURM_PARTITION:-debug}
CPUS=${CLICKSEG_SLURM_CPUS:-}
MARK=/run/clickseg-slurm          # pid copies of what this script started
CONF=/etc/slurm/slurm.conf
LOGS=/var/log/slurm

say() { echo "local_slurm: $*" >&2; }
fail() { say "ERROR: $*"; exit 1; }

alive() {  # alive PID: running and not a zombie
  local pid=$1 st
  [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || return 1
  st=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
  [ "$st" != Z ]
}
pidfile_of() { case $1 in munged) echo /run/munge/munged.pid ;; *) echo "/run/$1.pid" ;; esac; }
running_pid() { local f; f=$(pidfile_of "$1"); [ -f "$f" ] && alive "$(cat "$f")" && cat "$f"; }
started_pid() { [ -f "$MARK/$1.pid" ] && alive "$(cat "$MARK/$1.pid")" && cat "$MARK/$1.pid"; }

install_packages() {
  if [ -x /usr/sbin/slurmctld ] && [ -x /usr/sbin/slurmd ] && [ -x /usr/sbin/munged ] && command -v sbatch >/dev/null; then
    return
  fi
  command -v apt-get >/dev/null || fail "Slurm is not installed and apt-get is not available"
  local blocker=0
  # package scripts try to start services; there is no init system to start them with
  if [ ! -e /usr/sbin/policy-rc.d ]; then printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; blocker=1; fi
  apt-cache show slurmd >/dev/null 2>&1 || apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >&2
  [ "$blocker" = 1 ] && rm -f /usr/sbin/policy-rc.d
  return 0
}

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
  if [ -f "$CONF" ] && [ "$(cat "$CONF")" = "$text" ]; then return; fi
  mkdir -p "$(dirname "$CONF")"
  printf '%s\n' "$text" > "$CONF"
  echo changed
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

[ "$(id -u)" = 0 ] || fail "must run as root"
case "${1:-}" in
  up) up ;; down) down ;; status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
