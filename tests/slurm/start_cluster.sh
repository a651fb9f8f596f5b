#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for tests/test_slurm.py: Debian's slurm-wlm and munge,
# run as root, slurmctld and slurmd on this host, no accounting. Everything (config, munge key,
# state, logs, pid files) lives under STATE_DIR, on ports of its own. One thing outside it:
# /etc/slurm/slurm.conf, a link to STATE_DIR/slurm.conf, because the job steps that the Snakemake
# SLURM plugin starts with srun inside each job drop SLURM_CONF from their environment. So this
# refuses to run where a SLURM configuration exists; stop_cluster.sh removes the link.
#   tests/slurm/start_cluster.sh STATE_DIR
#   tests/slurm/stop_cluster.sh STATE_DIR
set -euo pipefail
dir=$(realpath -m "${1:?usage: start_cluster.sh STATE_DIR}")
system_conf=/etc/slurm/slurm.conf
if [ -e "$system_conf" ] || [ -L "$system_conf" ]; then
    echo "$system_conf exists: this machine has a SLURM configuration; the test cluster would replace it" >&2
    exit 1
fi
mkdir -p "$dir"/{state,spool,log,munge}
chmod 700 "$dir/munge"
host=$(hostname -s)
cpus=$(nproc)
memory=$(free -m | awk '/^Mem:/ {print int($2 * 0.9)}')  # MB, a margin below what the node has

mungekey --create --keyfile "$dir/munge/munge.key" --force
# munged refuses to run as root unless forced: this cluster is a throwaway test fixture.
munged --force --socket "$dir/munge/munge.socket" --key-file "$dir/munge/munge.key" \
    --pid-file "$dir/munge/munged.pid" --log-file "$dir/log/munged.log" --seed-file "$dir/munge/munged.seed"

cat > "$dir/slurm.conf" <<CONF
ClusterName=rosdtest
SlurmctldHost=$host
SlurmctldPort=16817
SlurmdPort=16818
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
# No cgroups (they are often unavailable in containers): processes are tracked through /proc.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
# No accounting daemon: sacct sees nothing, so jobs are followed with squeue, which keeps finished
# jobs for MinJobAge seconds: an hour, longer than a test run, so the test can list them all after.
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=3600
MpiDefault=none
ReturnToService=2
KillWait=5
NodeName=$host CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF

mkdir -p "$(dirname "$system_conf")"
ln -s "$dir/slurm.conf" "$system_conf"
slurmctld
slurmd
for _ in $(seq 1 60); do
    if [ "$(sinfo --noheader --format=%t 2>/dev/null)" = "idle" ]; then
        echo "SLURM cluster up: node $host, $cpus CPUs, $memory MB"
        exit 0
    fi
    sleep 0.5
done
echo "the SLURM node did not become idle; logs in $dir/log" >&2
exit 1
