#!/usr/bin/env bash
# Stop the daemons started by up.sh, each through its own PID file (never by name), node daemon first.
# State (job ids in /var/spool/slurmctld, the accounting database) is kept: wiping only one of them makes
# new jobs collide with stale records of old ones.
set -uo pipefail
for pf in /run/slurmd.pid /run/slurmctld.pid /run/slurmdbd.pid /run/mysqld/mysqld.pid /run/munge/munged.pid; do
  [[ -f "$pf" ]] || continue
  pid=$(cat "$pf")
  kill -0 "$pid" 2>/dev/null || continue
  kill "$pid"
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    echo "down.sh: $pf ($pid) ignored SIGTERM for 10 s; sending SIGKILL" >&2
    kill -9 "$pid"
  fi
  echo "stopped $(basename "$pf" .pid) ($pid)"
done
