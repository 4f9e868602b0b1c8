"""A real, throwaway PostgreSQL for the tests: ``initdb`` a cluster in a temporary folder and
``pg_ctl`` it up on a free port of 127.0.0.1, with its socket in that folder, so it touches nothing
of a server the host may run. Connections over TCP (every URL the tests give MLflow and Optuna)
need a password (SCRAM); the local socket, used only here to create roles and databases, trusts
its user. ``fsync=off``: nothing in it has to survive a crash.

Needs Debian's ``postgresql`` (``.ci/run`` installs it) and psycopg 3 (``pip install -e
'.[postgres]'``); as root, the server runs as the ``postgres`` user (initdb refuses root).
``missing()`` says what is absent so the fixture can skip with that message.
"""
from __future__ import annotations

import glob
import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import time
from pathlib import Path

PROGRAMS = ("initdb", "pg_ctl")
USER, PASSWORD = "kronos", "s3cret-PG"  # the role the tests' URLs log in as


def program(name: str) -> str | None:
    """``name`` on PATH, else in Debian's versioned folder (/usr/lib/postgresql/<major>/bin), newest first."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    return candidates[-1] if candidates else None


def missing() -> str | None:
    """Why no PostgreSQL can start here (a program, the driver or the postgres user absent), or None."""
    absent = [name for name in PROGRAMS if program(name) is None]
    if absent:
        return f"{', '.join(absent)} not installed (apt-get install -y postgresql)"
    if importlib.util.find_spec("psycopg") is None:
        return "no psycopg (pip install -e '.[postgres]')"
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            return "no runuser to start PostgreSQL as user postgres (initdb refuses root)"
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "no user postgres to run the server as (initdb refuses root; the postgresql package creates it)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresCluster:
    """``start()`` brings the server up; ``database(name)`` creates a database owned by the tests'
    role and returns its ``postgresql://kronos:<password>@127.0.0.1:<port>/<name>`` URL; ``stop()``
    ends the server."""

    def __init__(self, root: Path) -> None:
        self.root, self.data, self.port = root, root / "data", _free_port()
        self.log = root / "postgres.log"
        self.host, self.user, self.password = "127.0.0.1", USER, PASSWORD
        self._as_postgres = os.geteuid() == 0
        self.superuser = "postgres"

    def _run(self, *command: str) -> subprocess.CompletedProcess:
        """A PostgreSQL program, as user postgres when we are root."""
        argv = ["runuser", "-u", "postgres", "--", *command] if self._as_postgres else list(command)
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120,
                              env={**os.environ, "LC_ALL": "C", "LANG": "C"})
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}\n"
                               f"{self.logs()}")
        return proc

    def start(self, timeout: float = 60) -> None:
        if self._as_postgres:
            owner = pwd.getpwnam("postgres")
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
        self._run(program("initdb"), "-D", str(self.data), "-U", self.superuser, "--auth-local=trust",
                  "--auth-host=scram-sha-256", "--encoding=UTF8", "--no-instructions")
        self._run(program("pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", str(int(timeout)),
                  "-o", f"-p {self.port} -k {self.root} -c listen_addresses={self.host} -c fsync=off "
                        "-c synchronous_commit=off -c full_page_writes=off -c max_connections=100",
                  "start")
        self.execute(f"CREATE ROLE {self.user} LOGIN PASSWORD '{self.password}'")

    def _connect(self, dbname: str = "postgres"):
        import psycopg

        # Through the socket in our folder, as the superuser: trusted, no password.
        return psycopg.connect(host=str(self.root), port=self.port, user=self.superuser, dbname=dbname,
                               autocommit=True)

    def execute(self, sql: str) -> None:
        with self._connect() as conn:
            conn.execute(sql)

    def url(self, database: str) -> str:
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{database}"

    def database(self, name: str) -> str:
        """A new, empty database ``name`` owned by the tests' role; its URL (with the password)."""
        self.execute(f'CREATE DATABASE "{name}" OWNER {self.user}')
        return self.url(name)

    def logs(self) -> str:
        return self.log.read_text()[-3000:] if self.log.is_file() else ""

    def stop(self) -> None:
        """``pg_ctl stop -m immediate`` (a throwaway: nothing to flush), and wait for it."""
        if (self.data / "postmaster.pid").exists():
            try:
                self._run(program("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
            except (RuntimeError, subprocess.TimeoutExpired):
                pass
        deadline = time.time() + 20
        while time.time() < deadline and (self.data / "postmaster.pid").exists():
            time.sleep(0.2)
