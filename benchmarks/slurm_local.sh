#!/bin/sh
# Start or stop a one-node SLURM cluster on 127.0.0.1 (this machine), for checking `stilts study --cluster slurm`
# against a real SLURM (tests/test_slurm_real.py runs where `sinfo` answers).
#
#   sudo sh benchmarks/slurm_local.sh start    # then: sinfo; srun hostname; pytest -m slurm
#   sudo sh benchmarks/slurm_local.sh stop
#
# Needs root and Debian's SLURM packages (`apt-get install slurm-wlm munge`; tested with 22.05.8). It writes
# /etc/slurm/slurm.conf and gres.conf, a munge key if there is none, and keeps state and logs under
# /var/spool/slurm-local and /var/log/slurm-local. No cgroup plugins and no systemd: fit for a container.
# The node has 2 CPUs and two stand-in GPUs (a `gpu` gres on /dev/null and /dev/zero): stilts' SLURM jobs ask for
# `--gres=gpu:1`, and on this node their cells train on CPU.
set -eu

SPOOL=/var/spool/slurm-local
LOGS=/var/log/slurm-local
CPUS=${SLURM_LOCAL_CPUS:-2}
MEM_MB=${SLURM_LOCAL_MEM_MB:-20000}

need_root() {
    [ "$(id -u)" -eq 0 ] || { echo "slurm_local.sh: needs root (it starts munged, slurmctld and slurmd)" >&2; exit 2; }
    for bin in munged slurmctld slurmd sinfo; do
        command -v "$bin" >/dev/null || PATH=$PATH:/usr/sbin
        command -v "$bin" >/dev/null || {
            echo "slurm_local.sh: $bin not found: apt-get install slurm-wlm munge (Debian)" >&2; exit 2; }
    done
}

running() {  # a daemon whose pid file names a live process
    [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

write_config() {
    mkdir -p /etc/slurm "$SPOOL/ctld" "$SPOOL/d" "$LOGS"
    cat > /etc/slurm/slurm.conf <<EOF
ClusterName=local
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$SPOOL/ctld
SlurmdSpoolDir=$SPOOL/d
SlurmctldPidFile=$SPOOL/slurmctld.pid
SlurmdPidFile=$SPOOL/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
SlurmctldDebug=info
SlurmdDebug=debug
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MinJobAge=10
KillWait=30
SchedulerType=sched/backfill
GresTypes=gpu
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
    cat > /etc/slurm/gres.conf <<EOF
AutoDetect=off
NodeName=localhost Name=gpu File=/dev/null
NodeName=localhost Name=gpu File=/dev/zero
EOF
}

start() {
    need_root
    write_config
    mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge
    [ -s /etc/munge/munge.key ] || { dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 2>/dev/null; }
    chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
    chmod 400 /etc/munge/munge.key
    munge -n >/dev/null 2>&1 || su -s /bin/sh munge -c munged
    running "$SPOOL/slurmctld.pid" || slurmctld
    running "$SPOOL/slurmd.pid" || slurmd -N localhost
    for _ in $(seq 30); do
        sinfo -h -o %T 2>/dev/null | grep -q -E '^(idle|mixed|allocated)$' && break
        # a drain left in the saved state by an earlier configuration
        ! sinfo -h -o %T 2>/dev/null | grep -q drain || scontrol update NodeName=localhost State=RESUME
        sleep 1
    done
    sinfo
    echo "SLURM: $(sinfo --version)"
    echo "CPU: $(lscpu | sed -n 's/^Model name:[[:space:]]*//p')"
}

stop() {
    need_root
    # slurm's own shutdown stops slurmctld and every slurmd; then munged, by its pid file
    scontrol shutdown 2>/dev/null || true
    for _ in $(seq 20); do running "$SPOOL/slurmctld.pid" || running "$SPOOL/slurmd.pid" || break; sleep 0.5; done
    for pidfile in "$SPOOL/slurmctld.pid" "$SPOOL/slurmd.pid" /run/munge/munged.pid; do
        ! running "$pidfile" || kill "$(cat "$pidfile")"
    done
    echo "SLURM stopped"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    *) echo "usage: slurm_local.sh start|stop" >&2; exit 2 ;;
esac
