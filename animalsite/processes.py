"""The processes the product runs as (web, Celery workers, beat): how each is started, how to
know it is ready, and how to stop it with everything it started.

One harness for `manage.py run_all`, the tests that need a real worker and the benchmarks that
start a whole installation.
"""

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORKER_READY = "ready."  # what `celery worker` logs once it consumes
# The training worker's CPU priority below the others' (nice(2) increment): on a machine that
# runs both queues, a CPU training run takes only the time predictions leave over.
TRAINING_NICENESS = 10


class ProcessFailed(RuntimeError):
    """A process exited or did not get ready in time; the message ends with its log's tail."""


def die_with_parent() -> None:
    """A Popen preexec_fn: if the parent is killed without a chance to clean up, the kernel
    stops the child too (Linux; elsewhere the normal shutdown path stops it)."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def bin_path(name: str) -> str:
    """A console script of this interpreter's environment (gunicorn, celery)."""
    return os.path.join(os.path.dirname(sys.executable), name)


def worker_command(queues: list[str], *, concurrency: int = 1, pool: str = "prefork", name: str = "",
                   loglevel: str = "INFO", quiet: bool = True) -> list[str]:
    """A `celery worker` on these queues. quiet: no gossip and mingle (a faster start; workers
    started together need not know each other)."""
    command = [sys.executable, "-m", "celery", "-A", "animalsite", "worker", "-Q", ",".join(queues),
               "--concurrency", str(concurrency), "--pool", pool, "--loglevel", loglevel,
               "--hostname", f"{name or 'worker'}-{secrets.token_hex(3)}@%h"]
    return command + (["--without-gossip", "--without-mingle"] if quiet else [])


def web_command(bind: str, *, workers: int = 2, threads: int = 4, access_log: bool = True) -> list[str]:
    return [bin_path("gunicorn"), "animalsite.wsgi", "--bind", bind, "--workers", str(workers),
            "--threads", str(threads)] + (["--access-logfile", "-"] if access_log else [])


def beat_command(schedule_file: Path) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "animalsite", "beat", "--loglevel", "INFO",
            "--schedule", str(schedule_file)]


def child_setup(niceness: int = 0):
    """A Popen preexec_fn: die with the parent, and run `niceness` steps below the parent's CPU
    priority (inherited by every process the child starts, e.g. a Celery worker's pool)."""
    def setup() -> None:
        die_with_parent()
        if niceness:
            os.nice(niceness)

    return setup


def start(command: list[str], *, env: dict | None = None, log_path: Path | None = None, name: str = "",
          new_session: bool = False, niceness: int = 0) -> subprocess.Popen:
    """A child in the repository root; its output goes to log_path (or this process's own).
    new_session: Ctrl-C in a terminal reaches the parent only, which stops children in order.
    niceness: a lower CPU priority than this process's (0: the same)."""
    log = open(log_path, "w") if log_path else None
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log,
                               stderr=subprocess.STDOUT if log else None, start_new_session=new_session,
                               preexec_fn=child_setup(niceness))
    process.name, process.log_path, process.log = name or Path(command[0]).name, log_path, log
    return process


def tail(path: Path | None, lines: int = 40) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:]) if path else ""
    except OSError:
        return ""


def wait_ready(process: subprocess.Popen, ready=None, *, timeout: float = 120) -> subprocess.Popen:
    """Until ready() (by default: the worker's log says it consumes); ProcessFailed if the process
    exits or the time runs out."""
    ready = ready or (lambda: WORKER_READY in Path(process.log_path).read_text(errors="replace"))
    deadline = time.monotonic() + timeout
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            stop(process)
            raise ProcessFailed(f"{process.name} did not get ready (exit code {process.poll()}):\n"
                                f"{tail(process.log_path, 60)}")
        time.sleep(0.2)
    return process


def descendants(root: int) -> list[int]:
    """root and every process under it, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def stop(*processes: subprocess.Popen, timeout: float = 20) -> None:
    """SIGTERM (gunicorn and celery finish the work at hand), then SIGKILL whatever is left of
    each tree: pool children a master that died first left behind. Only processes we started."""
    trees = {p.pid: descendants(p.pid) for p in processes if p.poll() is None}
    for p in processes:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + timeout
    for p in processes:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for pids in trees.values():
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    for p in processes:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        if p.log:
            p.log.close()
