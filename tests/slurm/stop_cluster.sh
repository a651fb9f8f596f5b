#!/usr/bin/env bash
# Stop the test cluster that start_cluster.sh started under STATE_DIR, and nothing else: when
# /etc/slurm/slurm.conf is its link, cancel the cluster's jobs and remove the link; then stop the
# daemons by the process ids they wrote under STATE_DIR. A start that found another cluster running
# wrote no link and no pid files, so stopping it leaves that cluster alone.
set -uo pipefail
dir=$(realpath -m "${1:?usage: stop_cluster.sh STATE_DIR}")
system_conf=/etc/slurm/slurm.conf
ours=false
if [ "$(readlink "$system_conf")" = "$dir/slurm.conf" ]; then
    ours=true
    scancel --full --quiet --partition=test 2>/dev/null
fi
for pidfile in "$dir/slurmd.pid" "$dir/slurmctld.pid" "$dir/munge/munged.pid"; do
    [ -s "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || continue
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
done
if $ours; then
    rm "$system_conf"
fi
exit 0
