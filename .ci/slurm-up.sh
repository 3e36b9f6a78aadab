#!/usr/bin/env bash
# A single-node SLURM from Debian packages for tests/test_slurm.py: munge, mariadb + slurmdbd
# (so sacct sees finished jobs), slurmctld and slurmd, a `cpu` and a `gpu` partition (one fake
# GPU on /dev/null) on this machine. Needs root and apt; safe to run twice.
# The node advertises 8 CPUs and 64 GB (config_overrides) so the shipped profiles' real-job
# requests are schedulable here; the test's tiny jobs use far less.
set -euo pipefail
host=$(hostname)
export DEBIAN_FRONTEND=noninteractive
if ! command -v slurmctld >/dev/null || ! command -v slurmdbd >/dev/null || ! command -v mariadbd >/dev/null; then
    apt-get update -q
    apt-get install -y -q --no-install-recommends slurmctld slurmd slurm-client slurmdbd munge mariadb-server
fi
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge /run/mysqld
chown slurm:slurm /var/spool/slurmctld /var/log/slurm && chown munge:munge /run/munge && chown mysql:mysql /run/mysqld
[ -s /etc/munge/munge.key ] || { dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null; }
chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
pgrep -x munged >/dev/null || runuser -u munge -- /usr/sbin/munged
if ! pgrep -x mariadbd >/dev/null; then
    (mysqld_safe >/dev/null 2>&1 &)
    for _ in $(seq 30); do mysqladmin ping >/dev/null 2>&1 && break; sleep 1; done
fi
mysql -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db; CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurmci'; GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
cat > /etc/slurm/slurmdbd.conf <<CONF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=slurm
LogFile=/var/log/slurm/slurmdbd.log
PidFile=/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurmci
StorageLoc=slurm_acct_db
CONF
chown slurm:slurm /etc/slurm/slurmdbd.conf && chmod 600 /etc/slurm/slurmdbd.conf
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=ci
SlurmctldHost=$host
AuthType=auth/munge
SlurmUser=slurm
SlurmdUser=root
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmdParameters=config_overrides
ReturnToService=2
MinJobAge=3600
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/none
AccountingStoreFlags=job_comment
# sacct shows the GPU a job got (AllocTRES gres/gpu=N) only for TRES it tracks
AccountingStorageTRES=gres/gpu
GresTypes=gpu
NodeName=$host CPUs=8 RealMemory=64000 Gres=gpu:1 State=UNKNOWN
PartitionName=cpu Nodes=$host Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$host MaxTime=INFINITE State=UP
CONF
echo "NodeName=$host Name=gpu File=/dev/null" > /etc/slurm/gres.conf
if ! pgrep -x slurmdbd >/dev/null; then /usr/sbin/slurmdbd; sleep 3; fi
sacctmgr -i add cluster ci >/dev/null 2>&1 || true
if ! pgrep -x slurmctld >/dev/null; then /usr/sbin/slurmctld; fi
if ! pgrep -x slurmd >/dev/null; then /usr/sbin/slurmd; fi
for _ in $(seq 30); do sinfo -h -o %T 2>/dev/null | grep -qE "idle|mixed|alloc" && break; sleep 1; done
scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true
sinfo
