"""Start long-running processes in their own process groups and stop them by recorded pid.

Each component gets a new session so that stopping it also stops what it spawned (API
workers, executor workers, task supervisors). The pid file lets `make down` in another shell
stop exactly what `make up` started, and nothing else.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import psutil


class ComponentDied(RuntimeError):
    pass


class ProcessGroup:
    def __init__(self, pid_file: Path, log_dir: Path):
        self.pid_file = pid_file
        self.log_dir = log_dir
        self.processes: dict[str, subprocess.Popen] = {}

    def start(self, name: str, command: list[str], env: dict) -> None:
        log = open(self.log_dir / f"{name}.log", "ab")
        self.processes[name] = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
        log.close()
        self._record()
        print(f"started {name} (pid {self.processes[name].pid}, log {self.log_dir / (name + '.log')})", flush=True)

    def _record(self) -> None:
        self.pid_file.write_text("".join(f"{name} {p.pid}\n" for name, p in self.processes.items()))

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                tail = (self.log_dir / f"{name}.log").read_text(errors="replace").splitlines()[-15:]
                raise ComponentDied(f"{name} exited with code {process.returncode}; last log lines:\n  " + "\n  ".join(tail))

    def stop_all(self) -> None:
        stop_recorded(self.pid_file, quiet=True)
        for process in self.processes.values():
            try:
                process.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass


def stop_recorded(pid_file: Path, *, quiet: bool, grace_seconds: float = 20) -> int:
    """SIGTERM every recorded process group, wait, then SIGKILL what is left. Returns groups stopped."""
    if not pid_file.exists():
        return 0
    groups = []
    for line in pid_file.read_text().splitlines():
        name, pid = line.split()
        if psutil.pid_exists(int(pid)):
            groups.append((name, int(pid)))
    for name, pid in groups:
        if not quiet:
            print(f"stopping {name} (pid {pid})", flush=True)
        _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline and any(_group_alive(pid) for _, pid in groups):
        time.sleep(0.5)
    for _, pid in groups:
        if _group_alive(pid):
            _signal_group(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    return len(groups)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _group_alive(pgid: int) -> bool:
    for process in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(process.info["pid"]) == pgid and process.status() != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, psutil.NoSuchProcess):
            continue
    return False
