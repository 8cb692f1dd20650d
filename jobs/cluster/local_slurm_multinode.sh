# Multi-node mode of jobs/cluster/local_slurm.sh: sourced by it for `--nodes N` (N >= 2), which
# also provides say/fail/alive/install_packages/write_if_changed/policy_conf. Not run by itself.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then echo "use: bash jobs/cluster/local_slurm.sh up|status|down|env --nodes N" >&2; exit 2; fi
#
# A real N-node Slurm cluster on this one machine (no containers, no VMs). Each host is a set of
# Linux namespaces:
#   network  its own eth0 (a veth whose other end is a port of bridge csbr0) and address
#   UTS      its own hostname, so `hostname` in a job and Slurm's node list agree
#   mount    a generated hosts file bind-mounted over /etc/hosts, so node names resolve there
#            (MASTER_ADDR / --main_process_ip = the first node's name). Everything else is the
#            same filesystem as outside: the project's .venv, job folders, /tmp are shared, as on
#            a cluster with a shared filesystem.
#   clickseg-ctl    NET.10       slurmctld, port 6827
#   clickseg-nodeK  NET.(10+K)   slurmd, port 6828 (one per namespace)
#   (root namespace) NET.1 on the bridge: sinfo/sbatch/srun/submitit run from here with SLURM_CONF.
# The daemons are started inside the namespaces and hold them (slurmstepd and job processes
# inherit them); the network namespaces are also kept as /run/netns/clickseg-*. There is no PID
# namespace: `ps` outside shows all job processes. Nothing is routed or NATed off the bridge.
#
# Separate from the single-node cluster (/etc/slurm, ports 6817/6818, /var/spool/slurm*,
# /run/munge, /run/clickseg-slurm): own config, state, spool and logs under $MN_ROOT, pid files and
# munge socket under $MN_RUN, its own munged with its own key, other ports. Both run at once.

MN_NET=${CLICKSEG_SLURM_NET:-10.78.0}
MN_CPUS=${CLICKSEG_SLURM_CPUS:-2}     # per node; all nodes share the machine's real cores
MN_ROOT=/var/lib/clickseg-slurm-multinode   # config, hosts file, state, spool, logs, munge key (kept by down)
MN_RUN=/run/clickseg-slurm-multinode        # pid files and munge socket (removed by down)
MN_CONF=$MN_ROOT/slurm.conf
MN_HOSTS=$MN_ROOT/hosts
MN_MUNGE_SOCK=$MN_RUN/munge/munge.socket
MN_CTL=clickseg-ctl
MN_BRIDGE=csbr0
MN_CTL_PORT=6827
MN_SLURMD_PORT=6828
MN_WAIT_S=60
MN_NETNS_MARK=$MN_ROOT/netns-mount-is-ours   # /run/netns was no mount point before our `ip netns add`
export SLURM_CONF=$MN_CONF                   # every Slurm client command below talks to this cluster

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
wait_for() {  # wait_for SECONDS CMD...: poll CMD every 0.2 s; false if it never succeeded
  local end; end=$(awk -v t="$1" -v n="$(now)" 'BEGIN { printf "%.3f", n + t }'); shift
  until "$@"; do
    awk -v e="$end" -v n="$(now)" 'BEGIN { exit !(n > e) }' && return 1
    sleep 0.2
  done
}

mn_nodes() { local i; for ((i = 1; i <= NODES; i++)); do echo "clickseg-node$i"; done; }
mn_hosts() { echo "$MN_CTL"; mn_nodes; }
mn_ip() { if [ "$1" = "$MN_CTL" ]; then echo "$MN_NET.10"; else echo "$MN_NET.$((10 + ${1#clickseg-node}))"; fi; }
mn_veth() { echo "csv-${1#clickseg-}"; }   # host-side end; interface names are at most 15 characters
mn_pidfile() { if [ "$1" = "$MN_CTL" ]; then echo "$MN_RUN/slurmctld.pid"; else echo "$MN_RUN/slurmd-$1.pid"; fi; }
mn_daemon_name() { if [ "$1" = "$MN_CTL" ]; then echo slurmctld; else echo slurmd; fi; }

# PIDs of what we started: from our own pid files, and only if the process has the right command
# name and sits in the right network namespace (munged: uses our socket), so a reused PID or the
# single-node cluster's daemons are never taken for ours.
mn_daemon_pid() {
  local pid; pid=$(cat "$(mn_pidfile "$1")" 2>/dev/null || true)
  if alive "$pid" "$(mn_daemon_name "$1")" && [ "$(ip netns identify "$pid" 2>/dev/null)" = "$1" ]; then echo "$pid"; fi
}
mn_munged_pid() {
  local pid; pid=$(cat "$MN_RUN/munge/munged.pid" 2>/dev/null || true)
  if alive "$pid" munged && tr '\0' ' ' < "/proc/$pid/cmdline" | grep -qF -- "--socket=$MN_MUNGE_SOCK"; then echo "$pid"; fi
}
mn_stop_pid() {  # mn_stop_pid NAME PID: SIGTERM, up to 30 s, then SIGKILL
  kill -TERM "$2" 2>/dev/null || true
  wait_for 30 eval "! alive $2 $1" || { say "$1 ($2) ignored SIGTERM for 30 s: SIGKILL"; kill -KILL "$2" 2>/dev/null || true; }
  say "stopped $1 ($2)"
}

mn_render_conf() {
  local mem n
  mem=$(awk '/^MemTotal:/ { print int($2 / 1024) }' /proc/meminfo)
  cat <<CONF
# written by clickseg jobs/cluster/local_slurm.sh --nodes $NODES; regenerated on every 'up'
ClusterName=clickseg-multinode
SlurmctldHost=$MN_CTL($(mn_ip "$MN_CTL"))
SlurmctldPort=$MN_CTL_PORT
SlurmdPort=$MN_SLURMD_PORT
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
# our own munged (not /run/munge); a requeued job may start again after cred_expire s (default 120)
AuthInfo=socket=$MN_MUNGE_SOCK,cred_expire=10
$(policy_conf)
# every node reports the whole machine; advertise CPUs/RealMemory from this file instead
SlurmdParameters=config_overrides
StateSaveLocation=$MN_ROOT/state
SlurmdSpoolDir=$MN_ROOT/spool/%n
SlurmctldPidFile=$(mn_pidfile "$MN_CTL")
SlurmdPidFile=$MN_RUN/slurmd-%n.pid
SlurmctldLogFile=$MN_ROOT/log/slurmctld.log
SlurmdLogFile=$MN_ROOT/log/slurmd-%n.log
CONF
  for n in $(mn_nodes); do echo "NodeName=$n NodeAddr=$(mn_ip "$n") CPUs=$MN_CPUS RealMemory=$mem State=UNKNOWN"; done
  echo "PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP"
}

mn_render_hosts() {
  # The machine's hosts file plus our names. The ::ffff: lines: torch's TCPStore looks up the
  # name of each peer of its dual-stack socket (an IPv4-mapped address); without them glibc falls
  # through to DNS, unreachable here, and every rendezvous logs "[c10d] The hostname of the client
  # socket cannot be retrieved. err=-3".
  grep -v 'clickseg-' /etc/hosts || true
  local h
  for h in $(mn_hosts); do echo "$(mn_ip "$h") $h"; done
  for h in $(mn_hosts); do echo "::ffff:$(mn_ip "$h") $h"; done
}

mn_network() {  # the bridge, and per host a network namespace with lo and eth0 up
  local h veth
  if ! ip link show "$MN_BRIDGE" >/dev/null 2>&1; then
    local routed; routed=$(ip -4 route show to match "$MN_NET.1" | grep -v '^default' || true)
    [ -z "$routed" ] || fail "$MN_NET.0/24 is already routed here ($routed); set CLICKSEG_SLURM_NET"
    ip link add "$MN_BRIDGE" type bridge
  fi
  ip addr replace "$MN_NET.1/24" dev "$MN_BRIDGE"
  ip link set "$MN_BRIDGE" up
  for h in $(mn_hosts); do
    veth=$(mn_veth "$h")
    if [ ! -e "/run/netns/$h" ]; then
      # the first `ip netns add` makes /run/netns a mount point; remember to undo it in `down`
      mountpoint -q /run/netns 2>/dev/null || : > "$MN_NETNS_MARK"
      ip netns add "$h"
    fi
    ip -n "$h" link set lo up
    if ! ip -n "$h" link show eth0 >/dev/null 2>&1 || ! ip link show "$veth" >/dev/null 2>&1; then
      ip link del "$veth" 2>/dev/null || true
      ip -n "$h" link del eth0 2>/dev/null || true
      ip link add "$veth" type veth peer name "csp-${h#clickseg-}"
      ip link set "csp-${h#clickseg-}" netns "$h"
      ip -n "$h" link set "csp-${h#clickseg-}" name eth0
    fi
    ip link set "$veth" master "$MN_BRIDGE" up
    ip -n "$h" addr replace "$(mn_ip "$h")/24" dev eth0
    ip -n "$h" link set eth0 up
  done
}

# mn_in_host HOST CMD...: run CMD "on" HOST: its network namespace, a new UTS namespace with
# hostname HOST, a new mount namespace (slave: nothing mounted there leaks out) with our hosts
# file over /etc/hosts, and a clean environment (the caller's SLURM_*/CUDA_* must not reach the
# daemons), and without fd 9 (the lock of `up`: a daemon keeping it would block the next `up`).
# Not `ip netns exec`: it mounts a fresh /sys, hiding /sys/fs/cgroup, and slurmd 22.05
# then refuses to start even with proctrack/linuxproc. `mount -n`: no /run/mount utab.
mn_in_host() {
  local h=$1; shift
  nsenter --net="/run/netns/$h" -- unshare --uts --mount --propagation slave -- /bin/sh -c \
    'hostname "$1" && mount -n --bind "$2" /etc/hosts && shift 2 && exec "$@"' sh "$h" "$MN_HOSTS" \
    env -i PATH="$PATH" LANG=C.UTF-8 HOME=/root SLURM_CONF="$MN_CONF" "$@" 9>&-
}

mn_munge_ok() { munge --socket="$MN_MUNGE_SOCK" -n 2>/dev/null | unmunge --socket="$MN_MUNGE_SOCK" >/dev/null 2>&1; }
mn_ctl_ok() { scontrol ping 2>/dev/null | grep -q 'is UP'; }
mn_daemon_up() { [ -n "$(mn_daemon_pid "$1")" ]; }
mn_states() { sinfo -h -N -o '%N %T' 2>/dev/null | sort -u; }
mn_all_usable() { [ "$(mn_states | grep -cE ' (idle|mixed|allocated|completing)')" = "$NODES" ]; }

mn_start_daemon() {  # mn_start_daemon HOST: slurmctld on the controller, slurmd on a node
  local h=$1
  [ -n "$(mn_daemon_pid "$h")" ] && return 0
  rm -f "$(mn_pidfile "$h")"
  [ "$h" = "$MN_CTL" ] || mkdir -p "$MN_ROOT/spool/$h"
  mn_in_host "$h" "/usr/sbin/$(mn_daemon_name "$h")" || fail "$(mn_daemon_name "$h") on $h did not start; see $MN_ROOT/log"
  wait_for 15 mn_daemon_up "$h" || fail "$(mn_daemon_name "$h") on $h did not come up; see $MN_ROOT/log"
}

mn_stop_slurm() {  # every slurmd and the slurmctld we started (munged stays)
  local f h pid
  for f in "$MN_RUN"/slurmd-*.pid "$(mn_pidfile "$MN_CTL")"; do
    [ -e "$f" ] || continue
    if [ "$f" = "$(mn_pidfile "$MN_CTL")" ]; then h=$MN_CTL; else h=${f##*/slurmd-}; h=${h%.pid}; fi
    pid=$(mn_daemon_pid "$h")
    [ -z "$pid" ] || mn_stop_pid "$(mn_daemon_name "$h")" "$pid"
    rm -f "$f"
  done
}

mn_delete_host() {  # its daemon, any process left in its network namespace, its veth and namespace
  local h=$1 pid p
  pid=$(mn_daemon_pid "$h"); [ -z "$pid" ] || mn_stop_pid "$(mn_daemon_name "$h")" "$pid"
  rm -f "$(mn_pidfile "$h")"
  for p in $(ip netns pids "$h" 2>/dev/null); do kill -TERM "$p" 2>/dev/null || true; done
  wait_for 5 eval "[ -z \"\$(ip netns pids $h 2>/dev/null)\" ]" ||
    for p in $(ip netns pids "$h" 2>/dev/null); do kill -KILL "$p" 2>/dev/null || true; done
  ip link del "$(mn_veth "$h")" 2>/dev/null || true
  ip netns del "$h" 2>/dev/null || true
}

mn_up() {
  local t0 h; t0=$(now)
  [ "$NODES" -le 20 ] || fail "--nodes: at most 20"
  install_packages $(command -v ip >/dev/null || echo iproute2)
  mkdir -p "$MN_ROOT/state" "$MN_ROOT/spool" "$MN_ROOT/log"
  install -d -m 0755 "$MN_RUN"
  install -d -o munge -g munge -m 0700 "$MN_ROOT/munge"
  [ -s "$MN_ROOT/munge/munge.key" ] || mungekey --create --keyfile="$MN_ROOT/munge/munge.key"
  chown munge:munge "$MN_ROOT/munge/munge.key"; chmod 0400 "$MN_ROOT/munge/munge.key"
  local changed=0
  write_if_changed "$MN_CONF" "$(mn_render_conf)" && changed=1
  write_if_changed "$MN_HOSTS" "$(mn_render_hosts)" && changed=1
  # a daemon reads its config (slurm.conf; /etc/hosts is bound at its start) only when it starts
  [ "$changed" = 0 ] || mn_stop_slurm
  for h in $(ip netns list 2>/dev/null | awk '{print $1}' | grep '^clickseg-node' || true); do
    mn_hosts | grep -qx "$h" || mn_delete_host "$h"          # left from an `up` with more nodes
  done
  mn_network
  if [ -z "$(mn_munged_pid)" ]; then
    install -d -o munge -g munge -m 0755 "$MN_RUN/munge"
    # one munged in the root namespace serves every host: a path-bound unix socket is reachable
    # from any network namespace
    runuser -u munge -- /usr/sbin/munged --socket="$MN_MUNGE_SOCK" --key-file="$MN_ROOT/munge/munge.key" \
      --pid-file="$MN_RUN/munge/munged.pid" --seed-file="$MN_ROOT/munge/munged.seed" \
      --log-file="$MN_ROOT/munge/munged.log" 9>&- || fail "munged did not start; see $MN_ROOT/munge/munged.log"
  fi
  wait_for 10 mn_munge_ok || fail "munged runs but 'munge -n | unmunge' fails; see $MN_ROOT/munge/munged.log"
  mn_start_daemon "$MN_CTL"
  wait_for 15 mn_ctl_ok || fail "slurmctld does not answer 'scontrol ping'; see $MN_ROOT/log/slurmctld.log"
  for h in $(mn_nodes); do mn_start_daemon "$h"; done
  local resumed=0 end; end=$(awk -v n="$t0" -v w="$MN_WAIT_S" 'BEGIN { printf "%.3f", n + w }')
  until mn_all_usable; do
    if [ "$resumed" = 0 ] && mn_states | grep -qE ' (down|drain|fail|inval)'; then
      for h in $(mn_nodes); do scontrol update NodeName="$h" State=RESUME >/dev/null 2>&1 || true; done
      resumed=1    # once: e.g. DRAINED with an old reason after a config change
    fi
    if awk -v e="$end" -v n="$(now)" 'BEGIN { exit !(n > e) }'; then
      for f in "$MN_ROOT"/log/*.log; do echo "== $f"; tail -n 5 "$f"; done >&2
      fail "nodes not usable after ${MN_WAIT_S} s: $(mn_states | tr '\n' ' ')"
    fi
    sleep 0.2
  done
  say "up: $(mn_states | tr '\n' ' ')in $(since "$t0") s; clients need: export SLURM_CONF=$MN_CONF"
}

mn_down() {
  local t0 jobs h pid; t0=$(now)
  if [ -n "$(mn_daemon_pid "$MN_CTL")" ]; then
    jobs=$(squeue -h -o %A 2>/dev/null | tr '\n' ' ')
    if [ -n "${jobs// }" ]; then
      # shellcheck disable=SC2086
      scancel $jobs 2>/dev/null || true
      wait_for 20 eval '[ -z "$(squeue -h -o %A 2>/dev/null)" ]' || say "jobs still listed after 20 s: $jobs"
    fi
  fi
  mn_stop_slurm
  for h in $(ip netns list 2>/dev/null | awk '{print $1}' | grep '^clickseg-' || true); do mn_delete_host "$h"; done
  pid=$(mn_munged_pid); [ -z "$pid" ] || mn_stop_pid munged "$pid"
  ip link del "$MN_BRIDGE" 2>/dev/null || true
  if [ -f "$MN_NETNS_MARK" ] && [ -z "$(ls -A /run/netns 2>/dev/null)" ]; then
    umount -n /run/netns 2>/dev/null || true
    rmdir /run/netns 2>/dev/null || true
    rm -f "$MN_NETNS_MARK"
  fi
  rm -rf "$MN_RUN"
  say "down in $(since "$t0") s (kept $MN_ROOT: config, job state, logs)"
}

mn_status() {
  local h pid rc=0
  pid=$(mn_munged_pid)
  if [ -n "$pid" ]; then echo "munged: running ($pid)"; else echo "munged: not running"; rc=1; fi
  for h in $(mn_hosts); do
    pid=$(mn_daemon_pid "$h")
    if [ -n "$pid" ]; then echo "$h ($(mn_ip "$h")): $(mn_daemon_name "$h") running ($pid)"
    else echo "$h ($(mn_ip "$h")): $(mn_daemon_name "$h") not running"; rc=1; fi
  done
  echo "SLURM_CONF=$MN_CONF"
  [ "$rc" = 0 ] && sinfo && mn_all_usable
}

multinode_main() {
  local cmd=$1; shift
  [ "$cmd" = env ] && { echo "export SLURM_CONF=$MN_CONF"; return 0; }
  [ "$(id -u)" = 0 ] || fail "must run as root (namespaces, bridge, daemons)"
  case "$cmd" in
    up|down)
      mkdir -p "$MN_ROOT"
      exec 9> "$MN_ROOT/lock"; flock -w 300 9 || fail "another up/down holds $MN_ROOT/lock"   # CI and a test fixture may race
      "mn_$cmd" ;;
    status) mn_status ;;
    exec)   # exec NODE CMD...: in the namespaces of NODE's daemon
      [ $# -ge 2 ] || usage
      pid=$(mn_daemon_pid "$1"); [ -n "$pid" ] || fail "no daemon of ours runs on '$1'"
      shift; exec nsenter --target "$pid" --net --uts --mount -- "$@" ;;
    *) usage ;;
  esac
}
