"""The fork server behind `isolation = "process"`: import once, fork a fresh child per run.

`python -m mainspring_services.runner.fork_server`, a SOCK_SEQPACKET socket on MAINSPRING_FORK_SERVER_FD.
It imports mainspring and pyarrow before any thread exists (forking a process with threads,
such as Arrow's pools, leaves their locks held in the child), then loops: a `fork` packet
carries the child's two pipe ends (SCM_RIGHTS); the server forks, answers `{"forked": pid}`,
and reports `{"exited": pid, "code": n}` when a child ends (negative n: killed by signal -n),
since only the parent of a process can learn its exit status. The child leads its own
session (the runner signals its group), dies with the server, serves one run and exits.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import sys
import traceback

from mainspring_services.runner.child import die_with_parent, preload, serve
from mainspring_services.runner.worker_user import become_worker_user


def reap(sock: socket.socket) -> None:
    """Report every child that ended since the last call."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        code = os.waitstatus_to_exitcode(status)
        sock.send(json.dumps({"exited": pid, "code": code}).encode())


def fork_child(fds: list[int], closed_in_child: list[int]) -> int:
    """Fork a child that serves one run over fds (job pipe, control pipe); returns its pid."""
    pid = os.fork()
    if pid != 0:
        for fd in fds:
            os.close(fd)
        return pid
    code = 0
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in closed_in_child:
            os.close(fd)
        os.setsid()
        die_with_parent()
        serve(fds[0], fds[1], max_jobs=1)
    except BaseException:  # noqa: BLE001 - the child reports and exits
        traceback.print_exc()
        code = 70
    finally:
        os._exit(code)


def main() -> None:
    """Serve fork requests until the runner closes its end."""
    # Its children are forked as the worker user: the server switches before anything else.
    become_worker_user(os.environ)
    die_with_parent()
    preload()
    sock = socket.socket(fileno=int(os.environ["MAINSPRING_FORK_SERVER_FD"]))
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    # A Python-level handler, so SIGCHLD writes to the wakeup pipe and ends the select().
    signal.signal(signal.SIGCHLD, lambda _signum, _frame: None)
    while True:
        readable, _, _ = select.select([sock.fileno(), wake_read], [], [])
        if wake_read in readable:
            os.read(wake_read, 4096)
        if sock.fileno() in readable:
            message, fds, _, _ = socket.recv_fds(sock, 1024, 2)
            if not message:
                return  # the runner is gone or stopping
            if len(fds) != 2:
                for fd in fds:
                    os.close(fd)
                sys.stderr.write(f"fork request without its two pipes ({len(fds)} fds)\n")
                continue
            pid = fork_child(fds, [sock.fileno(), wake_read, wake_write])
            sock.send(json.dumps({"forked": pid}).encode())
        reap(sock)


if __name__ == "__main__":
    main()
