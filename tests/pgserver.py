"""A throwaway PostgreSQL server for tests: initdb in a temporary folder, started on a free port of 127.0.0.1
with trust authentication, stopped and removed after. Run as root, the server runs as an unprivileged system
user (initdb refuses root)."""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

PG_USER = "cnnmode-pg"  # the system user the server runs as when the tests run as root
DATABASE = "cnnmode"


def find_bin_dir() -> Path | None:
    """The folder holding initdb, pg_ctl and createdb: from PATH, else Debian's /usr/lib/postgresql/*/bin."""
    found = shutil.which("initdb")
    candidates = [Path(os.path.realpath(found)).parent] if found else []
    candidates += sorted((Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")),
                         key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0, reverse=True)
    for folder in candidates:
        if all((folder / tool).is_file() for tool in ("initdb", "pg_ctl", "createdb")):
            return folder
    return None


def server_user() -> str:
    """The user the server runs as: this one, or (as root) an unprivileged system user made on first use."""
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid()).pw_name
    try:
        pwd.getpwnam(PG_USER)
    except KeyError:
        made = subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_USER],
                              capture_output=True, text=True)
        if made.returncode != 0:
            return "nobody"
    return PG_USER


def free_port() -> int:
    """A TCP port of 127.0.0.1 nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_as(user: str, args: list[str], cwd: Path) -> None:
    """Run a PostgreSQL tool as `user` (through runuser when we are root); its output in the error if it fails."""
    prefix = ["runuser", "-u", user, "--"] if os.geteuid() == 0 else []
    done = subprocess.run(prefix + args, cwd=cwd, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")


@contextmanager
def postgres_server(bin_dir: Path) -> Iterator[str]:
    """A fresh PostgreSQL cluster with one database; yields its URL (postgresql://USER@127.0.0.1:PORT/DB)."""
    user = server_user()
    root = Path(tempfile.mkdtemp(prefix="cnnmode-pg-"))  # under /tmp: the server user must reach it
    data, sockets = root / "data", root / "sock"
    sockets.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, user)
        shutil.chown(sockets, user)
    started = False
    try:
        run_as(user, [str(bin_dir / "initdb"), "-D", str(data), "-U", user, "--auth=trust", "--no-sync",
                      "--encoding=UTF8", "--no-locale"], root)
        for attempt in range(3):  # the port may be taken between free_port() and the start
            port = free_port()
            options = (f"-h 127.0.0.1 -p {port} -k {sockets} -c fsync=off -c synchronous_commit=off "
                       "-c full_page_writes=off -c max_connections=50")
            try:
                run_as(user, [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w",
                              "-t", "60", "-o", options, "start"], root)
                started = True
                break
            except RuntimeError as e:
                if attempt == 2:
                    log = root / "server.log"
                    raise RuntimeError(f"{e}\n{log.read_text() if log.exists() else ''}") from None
        run_as(user, [str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", user, DATABASE], root)
        yield f"postgresql://{user}@127.0.0.1:{port}/{DATABASE}"
    finally:
        if started:
            run_as(user, [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], root)
        shutil.rmtree(root, ignore_errors=True)
