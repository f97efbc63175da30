"""Start long-running processes in their own process groups and stop them by recorded pid.

Each component gets a new session so that stopping it also stops what it spawned (API
workers, executor workers). The pid file records each pid with its start time, so a stale file
(after a reboot or a killed `make up`) never makes us signal an unrelated process that reused
the pid. Stopping also collects every descendant first: Airflow's task supervisors put tasks in
process groups of their own.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil


class ComponentDied(RuntimeError):
    pass


def say(*parts: object, error: bool = False) -> None:
    """Print to the terminal, but never fail: after Ctrl-C a `| tee` may already be gone, and
    cleanup must go on without anyone to read it."""
    try:
        print(*parts, file=sys.stderr if error else sys.stdout, flush=True)
    except (BrokenPipeError, OSError):
        pass


def write_private(path: Path, text: str) -> None:
    """Write a file readable by its owner only, from its creation on."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(path, 0o600)


class ProcessGroup:
    def __init__(self, pid_file: Path, log_dir: Path):
        self.pid_file = pid_file
        self.log_dir = log_dir
        self.processes: dict[str, subprocess.Popen] = {}

    def start(self, name: str, command: list[str], env: dict) -> None:
        with open(self.log_dir / f"{name}.log", "ab") as log:
            self.processes[name] = subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._record()
        say(f"started {name} (pid {self.processes[name].pid}, log {self.log_dir / (name + '.log')})")

    def _record(self) -> None:
        lines = []
        for name, process in self.processes.items():
            try:
                lines.append(f"{name} {process.pid} {psutil.Process(process.pid).create_time()}\n")
            except psutil.NoSuchProcess:
                continue
        self.pid_file.write_text("".join(lines))

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                tail = (self.log_dir / f"{name}.log").read_text(errors="replace").splitlines()[-15:]
                raise ComponentDied(f"{name} exited with code {process.returncode}; last log lines:\n  "
                                    + "\n  ".join(tail))

    def stop_all(self) -> None:
        stop_recorded(self.pid_file, quiet=True)
        for process in self.processes.values():
            try:
                process.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass


def _recorded(pid_file: Path) -> list[tuple[str, int]]:
    """(name, pgid) of recorded components whose leader is still the process we started."""
    if not pid_file.exists():
        return []
    groups = []
    for line in pid_file.read_text().splitlines():
        name, pid, started = line.split()
        try:
            same = abs(psutil.Process(int(pid)).create_time() - float(started)) < 0.01
        except psutil.NoSuchProcess:
            same = False
        if same or _group_members(int(pid)):
            groups.append((name, int(pid)))
    return groups


def stop_recorded(pid_file: Path, *, quiet: bool, grace_seconds: float = 20) -> int:
    """SIGTERM each recorded group and all its descendants, wait, SIGKILL what is left."""
    groups = _recorded(pid_file)
    doomed: dict[int, psutil.Process] = {}
    for name, pgid in groups:
        if not quiet:
            say(f"stopping {name} (process group {pgid})")
        for process in _group_members(pgid):
            doomed[process.pid] = process
            for child in _descendants(process):
                doomed[child.pid] = child
        _signal_group(pgid, signal.SIGTERM)
    for process in doomed.values():
        _terminate(process)
    _, alive = psutil.wait_procs(list(doomed.values()), timeout=grace_seconds)
    for process in alive:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    pid_file.unlink(missing_ok=True)
    return len(groups)


def _group_members(pgid: int) -> list[psutil.Process]:
    members = []
    for process in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(process.pid) == pgid and process.status() != psutil.STATUS_ZOMBIE:
                members.append(process)
        except (ProcessLookupError, psutil.NoSuchProcess):
            continue
    return members


def _descendants(process: psutil.Process) -> list[psutil.Process]:
    try:
        return process.children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _terminate(process: psutil.Process) -> None:
    try:
        process.terminate()
    except psutil.NoSuchProcess:
        pass


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass
