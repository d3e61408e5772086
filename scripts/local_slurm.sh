#!/usr/bin/env bash
# A one-node SLURM cluster on this machine (localhost, no systemd, no accounting), for trying
# simstudy's SLURM launcher for real and for tests/test_slurm_cluster.py. Needs root and
# Debian's slurm-wlm + munge (`start` installs them with apt-get when missing).
# Partition "debug" with this machine's cores and memory (minus 2 GB).
# Usage: bash scripts/local_slurm.sh start | stop | status
# It writes /etc/slurm/slurm.conf and refuses to when that file is not its own.
set -euo pipefail
cmd=${1:-status}
CONF=/etc/slurm/slurm.conf
MARK="# written by simstudy scripts/local_slurm.sh"
case $cmd in
start)
  if sinfo -h -o %T 2>/dev/null | grep -qE "idle|mixed|alloc"; then sinfo; exit 0; fi
  command -v slurmctld >/dev/null || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null; }
  if [ -s $CONF ] && ! grep -q "^$MARK" $CONF && ! grep -q "^ClusterName=local$" $CONF; then
    echo "$CONF exists and is not a local test cluster's: not touching it" >&2; exit 2
  fi
  mkdir -p /etc/slurm /run/munge /run/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
  chown munge:munge /run/munge; chown slurm:slurm /var/spool/slurmctld /var/log/slurm /run/slurm
  [ -s /etc/munge/munge.key ] || { dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
    chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key; }
  mem=$(( $(awk '/MemTotal/{print $2}' /proc/meminfo) / 1024 - 2048 ))
  cat > $CONF <<CONF
$MARK
ClusterName=local
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=slurm
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
  pgrep -x munged >/dev/null || runuser -u munge -- munged
  sleep 1
  pgrep -x slurmctld >/dev/null || (runuser -u slurm -- slurmctld -i >/dev/null 2>&1 &)
  sleep 2
  pgrep -x slurmd >/dev/null || (slurmd -N localhost >/dev/null 2>&1 &)
  for _ in $(seq 1 60); do sinfo -h -o %T 2>/dev/null | grep -qE "idle|mixed" && break; sleep 1; done
  sinfo
  ;;
stop)
  for p in /run/slurm/slurmd.pid /run/slurm/slurmctld.pid; do
    [ -s $p ] && kill "$(cat $p)" 2>/dev/null || true; done
  [ -s /run/munge/munged.pid ] && kill "$(cat /run/munge/munged.pid)" 2>/dev/null || true
  echo stopped ;;
status) sinfo 2>&1 || true ;;
*) echo "usage: $0 start | stop | status" >&2; exit 2 ;;
esac
