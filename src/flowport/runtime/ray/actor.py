"""The Ray actor of one instance: it runs ``python -m flowport.runtime.instance`` on its node.

The actor unpacks the flow into a private folder on its node, opens its sealed config, and
starts flowport's own instance server (the scoring app the local runtime starts) on the node's
address and a free port; the gateway then talks HTTP straight to it, no Ray proxy on the
request path. The config reaches the server over a pipe, as with local instances.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import ray

from flowport.runtime.local.isolation import INHERITED, INHERITED_PREFIXES
from flowport.runtime.local.logs import tail_lines
from flowport.runtime.local.process import preexec
from flowport.runtime.ray.sealing import Opener
from flowport.serving.traced import TRACE_FILE_ENV

TAIL_LINES = 30


SPANS_FILE = "spans.jsonl"
"""The instance's built-in trace file on its node, which the data plane pulls (``instance.py``)."""


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def minimal_environment(folder: Path) -> dict[str, str]:
    """What the instance inherits: PATH, locale, TLS and proxy settings; no Ray variable."""
    env = {k: v for k, v in os.environ.items() if k in INHERITED or k.startswith(INHERITED_PREFIXES)}
    env.setdefault("PATH", os.defpath)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    for name in ("home", "tmp"):
        (folder / name).mkdir(mode=0o700, exist_ok=True)
    env.update(PYTHONUNBUFFERED="1", HOME=str(folder / "home"), TMPDIR=str(folder / "tmp"))
    return env


@ray.remote(num_cpus=0, max_concurrency=4)
class InstanceActor:
    """One instance: ``start`` it, ``watch`` it (returns when it exits), ``stop`` it."""

    def __init__(self) -> None:
        self._opener = Opener()
        self._process: subprocess.Popen[bytes] | None = None
        self._folder: Path | None = None

    def public_key(self) -> bytes:
        return self._opener.public_key

    def start(self, flow_zip: bytes, sealed_config: bytes) -> dict[str, Any]:
        """Unpack the flow, start the instance server; its address, pid and node."""
        self._folder = folder = Path(tempfile.mkdtemp(prefix="flowport-instance-"))
        config = json.loads(self._opener.open(sealed_config))
        source = folder / "flow" / (Path(config["source"]).name or "flow")  # its name: the default title
        with zipfile.ZipFile(io.BytesIO(flow_zip)) as archive:
            archive.extractall(source)
        config["source"] = str(source)
        host = ray.util.get_node_ip_address()
        port = free_port(host)
        env = {**minimal_environment(folder), TRACE_FILE_ENV: str(folder / SPANS_FILE)}
        with open(folder / "instance.log", "ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "flowport.runtime.instance", "--host", host, "--port", str(port)],
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=folder,
                start_new_session=True,
                preexec_fn=preexec(),  # SIGTERM when this actor dies, even by -9
            )
        assert self._process.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self._process.stdin.write(json.dumps(config).encode())
        self._process.stdin.close()
        node = ray.get_runtime_context().get_node_id()
        return {"address": f"http://{host}:{port}", "pid": self._process.pid, "node": node}

    def watch(self) -> tuple[int, list[str]]:
        """Wait for the instance server to exit: its exit code and its log's last lines."""
        if self._process is None:
            return -1, []
        code = self._process.wait()
        return code, self.tail(TAIL_LINES)

    def tail(self, lines: int) -> list[str]:
        return tail_lines(self._folder / "instance.log", lines) if self._folder else []

    def spans(self, offset: int, limit: int) -> tuple[bytes, int]:
        """The whole span lines the instance wrote to its built-in trace file from ``offset`` (at
        most ``limit`` bytes), and the offset after them: from 0 again once the file started over."""
        if self._folder is None:
            return b"", 0
        return whole_lines(self._folder / SPANS_FILE, offset, limit)

    def stop(self, drain_seconds: float) -> None:
        """SIGTERM (in-flight requests finish), SIGKILL after ``drain_seconds``; remove the folder."""
        process = self._process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            try:
                process.wait(drain_seconds)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)


def whole_lines(path: Path, offset: int, limit: int) -> tuple[bytes, int]:
    """The whole lines of ``path`` from ``offset`` (at most ``limit`` bytes) and the offset after
    them. From 0 again when the file is shorter (it started over); a line cut by a skip or by a
    start-over is dropped up to its end, so only whole lines are ever given."""
    try:
        with open(path, "rb") as file:
            if os.fstat(file.fileno()).st_size < offset:
                offset = 0
            file.seek(max(offset - 1, 0))
            data = file.read(limit + (1 if offset else 0))
    except OSError:
        return b"", offset
    if offset:  # the byte before: a line's end, unless the file started over or a line was skipped
        whole, data = data[:1] == b"\n", data[1:]
        if not whole:
            cut = data.find(b"\n") + 1
            if not cut:
                return b"", offset + len(data)
            offset, data = offset + cut, data[cut:]
    end = data.rfind(b"\n") + 1
    if not end and len(data) == limit:  # one line longer than the limit: skipped, never stuck on
        return b"", offset + limit
    return data[:end], offset + end
