"""Starting and stopping one instance process."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import signal
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import BinaryIO

from flowport.runtime.base import InstanceConfig
from flowport.serving.traced import TRACE_FD_ENV

PR_SET_PDEATHSIG = 1


@contextlib.contextmanager
def _trace_file(path: Path | None) -> Iterator[BinaryIO | None]:
    if path is None:
        yield None
        return
    with open(path, "ab") as file:
        yield file


def preexec(become: Callable[[], None] | None = None) -> Callable[[], None] | None:
    """A ``preexec_fn``: ``become`` (the user switch), then have Linux send SIGTERM to the child
    when the server dies (even by -9); in that order, since a user switch clears that signal."""
    if not sys.platform.startswith("linux"):
        return become
    libc = ctypes.CDLL(None, use_errno=True)  # resolved before fork: the child only makes the call
    parent = os.getpid()

    def preexec() -> None:
        if become is not None:
            become()
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the server died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


async def spawn(
    python: str,
    socket: str,
    config: InstanceConfig,
    log_path: Path,
    *,
    env: Mapping[str, str],
    cwd: str | None = None,
    become: Callable[[], None] | None = None,
    trace_path: Path | None = None,
) -> asyncio.subprocess.Process:
    """Start ``python -m flowport.runtime.instance --uds socket``, its config on stdin, output to the log.

    ``env`` is the process's whole environment and ``become`` switches the child to the
    instance user before it execs (see ``isolation.py``). The process gets its
    own session, so a Ctrl-C at the server's terminal reaches only the server, which then
    drains its instances itself. ``trace_path``: the built-in trace store's file, opened here
    and inherited as ``FLOWPORT_TRACE_FD`` (the instance user need not be able to open it).
    """
    with open(log_path, "ab") as log, _trace_file(trace_path) as traces:
        fds = (traces.fileno(),) if traces is not None else ()
        if traces is not None:
            env = {**env, TRACE_FD_ENV: str(traces.fileno())}
        process = await asyncio.create_subprocess_exec(
            python,
            "-m",
            "flowport.runtime.instance",
            "--uds",
            socket,
            stdin=asyncio.subprocess.PIPE,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
            preexec_fn=preexec(become),
            pass_fds=fds,
        )
    assert process.stdin is not None
    try:
        process.stdin.write(json.dumps(config.to_json()).encode())
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # it died: the caller sees the exit
            await process.stdin.drain()
        process.stdin.close()
    except BaseException:
        kill(process)
        await process.wait()
        raise
    return process


def kill(process: asyncio.subprocess.Process) -> None:
    """SIGKILL the process and anything it started (its process group)."""
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        process.kill()


async def stop(process: asyncio.subprocess.Process, drain_seconds: float) -> None:
    """SIGTERM (the instance stops accepting and finishes in-flight requests), SIGKILL after the deadline."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            await asyncio.wait_for(process.wait(), drain_seconds)
        except TimeoutError:
            kill(process)
    await process.wait()
