#!/usr/bin/env bash
# Start a single-node Slurm on this machine for development and CI: munge, slurmctld and slurmd, and with
# --accounting also MariaDB + slurmdbd (sacct then reports true job states: FAILED, REQUEUED, ...).
# Needs root and apt (Debian/Ubuntu); no systemd and no cgroups. Missing packages are installed.
# Running daemons are kept, so calling it twice is harmless. Stop everything with down.sh (by PID file).
#
#   bash launchers/slurm_local/up.sh [--accounting]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
marker="# Single-node Slurm for development and CI"
accounting=0
for arg in "$@"; do
  case "$arg" in
    --accounting) accounting=1 ;;
    -h | --help) sed -n '2,7p' "$0"; exit 0 ;;
    *) echo "up.sh: unknown argument '$arg' (expected --accounting)" >&2; exit 2 ;;
  esac
done
[[ $(id -u) == 0 ]] || { echo "up.sh: must run as root (it starts system daemons)" >&2; exit 1; }
t0=$(date +%s.%N)

alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }
retry() { # retry N CMD...: run CMD every 0.2 s until it succeeds, at most N times
  local n=$1; shift
  for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  return 1
}

# Never reconfigure a Slurm someone else set up on this machine.
if [[ -f /etc/slurm/slurm.conf ]] && ! grep -qF "$marker" /etc/slurm/slurm.conf; then
  echo "up.sh: /etc/slurm/slurm.conf exists and was not written by bitcpm; leaving this machine's Slurm alone" >&2
  exit 1
fi

# --- packages (apt does not start daemons in containers without an init system) ---
pkgs=()
[[ -x /usr/sbin/slurmctld && -x /usr/sbin/slurmd ]] || pkgs+=(slurm-wlm)
[[ -x /usr/sbin/munged ]] || pkgs+=(munge)
if ((accounting)); then
  [[ -x /usr/sbin/slurmdbd ]] || pkgs+=(slurmdbd)
  [[ -x /usr/sbin/mariadbd ]] || pkgs+=(mariadb-server)
fi
if ((${#pkgs[@]})); then
  echo "up.sh: installing ${pkgs[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
fi

# --- munge (the package creates the key; make one if it is missing) ---
[[ -s /etc/munge/munge.key ]] || mungekey -c -k /etc/munge/munge.key
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /etc/munge/munge.key /run/munge /var/log/munge /var/lib/munge
chmod 600 /etc/munge/munge.key
munge -n >/dev/null 2>&1 || su -s /bin/sh munge -c /usr/sbin/munged
retry 50 munge -n || { echo "up.sh: munged did not start" >&2; exit 1; }

# --- slurm.conf from the template; a changed file means running daemons must restart ---
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
host=$(hostname -s)
mem=$(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 2048))
conf=$(sed -e "s/@HOST@/$host/g" -e "s/@CPUS@/$(nproc)/g" -e "s/@MEM@/$mem/g" "$here/slurm.conf.in")
if ((accounting)); then
  conf=$(sed 's#^AccountingStorageType=.*#AccountingStorageType=accounting_storage/slurmdbd\nAccountingStorageHost=localhost\nAccountingStoragePort=6819#' <<<"$conf")
fi
if [[ "$conf" != "$(cat /etc/slurm/slurm.conf 2>/dev/null)" ]]; then
  printf '%s\n' "$conf" >/etc/slurm/slurm.conf
  for pf in /run/slurmd.pid /run/slurmctld.pid; do
    if alive "$pf"; then pid=$(cat "$pf"); kill "$pid"; retry 50 test ! -e "/proc/$pid" || true; fi
  done
fi

# --- accounting: MariaDB + slurmdbd, and the cluster registered before slurmctld starts ---
if ((accounting)); then
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
  if ! mariadb -e 'select 1' >/dev/null 2>&1; then
    nohup /usr/sbin/mariadbd --user=mysql --socket=/run/mysqld/mysqld.sock --bind-address=127.0.0.1 \
      --pid-file=/run/mysqld/mysqld.pid >/var/log/slurm/mariadb.log 2>&1 &
    retry 150 mariadb -e 'select 1' || { echo "up.sh: MariaDB did not start (/var/log/slurm/mariadb.log)" >&2; exit 1; }
  fi
  pass=$(awk -F= '/^StoragePass=/ {print $2}' "$here/slurmdbd.conf")
  mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
    CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$pass';
    ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$pass';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
  install -m 600 "$here/slurmdbd.conf" /etc/slurm/slurmdbd.conf
  alive /run/slurmdbd.pid || /usr/sbin/slurmdbd
  retry 150 bash -c 'echo >/dev/tcp/127.0.0.1/6819' || { echo "up.sh: slurmdbd did not start" >&2; exit 1; }
  sacctmgr -i -Q add cluster local >/dev/null 2>&1 || true
fi

# --- controller and node daemon (both daemonize and write their PID files) ---
alive /run/slurmctld.pid || /usr/sbin/slurmctld
alive /run/slurmd.pid || /usr/sbin/slurmd
idle() { sinfo -h -o %T | grep -qx idle; }
if ! retry 150 idle; then
  # A node left DOWN/DRAIN by an earlier run (e.g. killed daemons) is put back into service.
  scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true
  retry 50 idle || { sinfo >&2; echo "up.sh: node $host is not idle (/var/log/slurm/)" >&2; exit 1; }
fi
sinfo
echo "slurm up in $(awk "BEGIN {printf \"%.1f\", $(date +%s.%N) - $t0}") s (accounting: $((accounting)))"
