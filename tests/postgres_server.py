"""A throwaway PostgreSQL server for tests: initdb into a fresh temporary folder, listen on a free port of 127.0.0.1
(and a unix socket in that folder only), trust authentication, no fsync; stopped and deleted afterwards.

PostgreSQL refuses to run as root, so as root the server runs as the ``postgres`` user that Debian's package
creates, and its data folder belongs to that user."""
from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator, Optional

SERVER_USER = "postgres"  # created by Debian's postgresql package; the server's owner when the tests run as root
ADMIN = "dogbench"  # the database superuser made by initdb; trust authentication, so no password


def postgres_bin_dir() -> Optional[Path]:
    """The folder holding initdb and pg_ctl: on PATH, else Debian's /usr/lib/postgresql/<version>/bin (newest)."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3].split(".")[0]))
    return Path(versions[-1]).parent if versions else None


def missing_postgres() -> Optional[str]:
    """Why no throwaway server can start here (None when one can)."""
    if postgres_bin_dir() is None:
        return "needs PostgreSQL's initdb and pg_ctl (Debian package postgresql)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SERVER_USER)
        except KeyError:
            return f"runs as root and PostgreSQL refuses root: needs the user {SERVER_USER!r} (Debian package postgresql)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def throwaway_postgres(database: str = "sweeps") -> Iterator[str]:
    """Start a server, create ``database``, yield its URL (postgresql://dogbench@127.0.0.1:PORT/DATABASE)."""
    bin_dir = postgres_bin_dir()
    as_server_user = ["runuser", "-u", SERVER_USER, "--"] if os.geteuid() == 0 else []
    folder = Path(tempfile.mkdtemp(prefix="dogbench-pg-"))  # not under pytest's tmp: that is private to root
    data = folder / "data"
    if as_server_user:
        user = pwd.getpwnam(SERVER_USER)
        os.chown(folder, user.pw_uid, user.pw_gid)

    def run(*command: str) -> None:
        done = subprocess.run(as_server_user + [str(bin_dir / command[0]), *command[1:]], capture_output=True,
                              text=True, timeout=60, cwd=folder)
        if done.returncode != 0:
            log = (folder / "server.log").read_text() if (folder / "server.log").exists() else ""
            raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}{done.stderr}{log}")

    port = free_port()
    started = False
    try:
        run("initdb", "-D", str(data), "-U", ADMIN, "--auth=trust", "--encoding=UTF8", "--no-locale", "--no-sync")
        server_options = (f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={folder} "
                          f"-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        run("pg_ctl", "-D", str(data), "-l", str(folder / "server.log"), "-o", server_options, "-w", "-t", "60", "start")
        started = True
        run("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", ADMIN, database)
        yield f"postgresql://{ADMIN}@127.0.0.1:{port}/{database}"
    finally:
        if started:
            run("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(folder, ignore_errors=True)
