"""A real single-node SLURM for the tests: ``munged`` (as user munge), ``slurmctld`` and ``slurmd``
(as root) with their key, config, state, spool, logs and sockets in one temporary folder, on free
ports, so it touches nothing of the host's own (a SLURM or munge it may run). ``cred_expire=10``:
SLURM holds a requeued job for that long (+1 s) before it may start again (120 s by default).

Needs Debian's ``slurm-wlm`` and ``munge`` (``.ci/run`` installs them) and root; ``missing()``
says what is absent so the fixture can skip with that message.
"""
from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

PROGRAMS = ("munged", "slurmctld", "slurmd", "sbatch", "sinfo", "squeue", "scontrol", "scancel", "runuser")

SLURM_CONF = """\
ClusterName=kronos-test
SlurmctldHost={host}
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket},cred_expire=10
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
KillWait=10
MinJobAge=300
NodeName={host} CPUs=2 RealMemory={memory_mb} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


def missing() -> str | None:
    """Why no SLURM can start here (a program absent, not root), or None."""
    absent = [name for name in PROGRAMS if shutil.which(name) is None and not Path(f"/usr/sbin/{name}").exists()]
    if absent:
        return f"{', '.join(absent)} not installed (apt-get install -y slurm-wlm munge)"
    if os.geteuid() != 0:
        return "slurmctld and slurmd run as root here, and these tests are not root"
    try:
        pwd.getpwnam("munge")
    except KeyError:
        return "no user munge (the munge package creates it)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _memory_mb() -> int:
    """The machine's memory in MB, so a job's ``--mem`` (submitit's ``mem_gb``) fits on the node."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return 1024


def _program(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


class SlurmCluster:
    """``start()`` brings the node up (idle in ``sinfo``); ``env`` is what a client needs
    (``SLURM_CONF``); ``stop()`` ends the daemons it started."""

    def __init__(self, root: Path) -> None:
        self.root, self.host = root, socket.gethostname().split(".")[0]
        self.conf = root / "slurm.conf"
        self.munge_socket = root / "munge" / "munge.socket"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}

    def start(self, timeout: float = 60) -> None:
        self._start_munge()
        for folder in ("state", "spool"):
            (self.root / folder).mkdir()
        self.conf.write_text(SLURM_CONF.format(host=self.host, root=self.root, munge_socket=self.munge_socket,
                                               ctld_port=_free_port(), slurmd_port=_free_port(),
                                               memory_mb=_memory_mb()))
        subprocess.run([_program("slurmctld"), "-f", str(self.conf)], env=self.env, check=True)
        subprocess.run([_program("slurmd"), "-f", str(self.conf)], env=self.env, check=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            state = subprocess.run(["sinfo", "-h", "-N", "-o", "%t"], env=self.env, capture_output=True, text=True)
            if state.stdout.strip() == "idle":
                return
            time.sleep(0.5)
        raise RuntimeError(f"the SLURM node did not come up idle in {timeout:.0f} s:\n{self.logs()}")

    def _start_munge(self) -> None:
        folder = self.munge_socket.parent  # clients reach the socket: execute for all
        folder.mkdir()
        folder.chmod(0o755)
        (folder / "key").mkdir(mode=0o700)
        key = folder / "key" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        munge = pwd.getpwnam("munge")
        for path in (folder, key.parent, key):
            os.chown(path, munge.pw_uid, munge.pw_gid)
        subprocess.run(["runuser", "-u", "munge", "--", _program("munged"), f"--socket={self.munge_socket}",
                        f"--key-file={key}", f"--pid-file={folder / 'munged.pid'}",
                        f"--log-file={folder / 'munged.log'}", f"--seed-file={folder / 'munged.seed'}"],
                       check=True)

    def logs(self) -> str:
        return "\n".join(f"== {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.root.rglob("*.log")))

    def stop(self) -> None:
        """SIGTERM to each daemon by its pid file, jobs first (scancel), and wait for them to go."""
        subprocess.run(["scancel", "--full", "--quiet", "-u", "root"], env=self.env, check=False)
        for pid_file in (self.root / "slurmd.pid", self.root / "slurmctld.pid", self.munge_socket.parent / "munged.pid"):
            try:
                pid = int(pid_file.read_text().split()[0])
                os.kill(pid, signal.SIGTERM)
            except (OSError, ValueError, IndexError):
                continue
            deadline = time.time() + 20
            while time.time() < deadline and Path(f"/proc/{pid}").exists():
                time.sleep(0.2)
