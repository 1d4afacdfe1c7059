"""Instance log files: ``<root>/<endpoint>/<deployment>/<instance id>.log``, tailed across instances."""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Callable, Collection, Iterable
from pathlib import Path

from flowport.connections import SCRUBBED
from flowport.runtime.base import DeploymentKey

KEEP_FILES = 20
"""Log files of gone instances kept per deployment (those of live instances always are)."""
TRACE_SUFFIX = ".traces.jsonl"
"""An instance's spans for the built-in trace store sit beside its log: ``<instance id>.traces.jsonl``."""
MIN_MASKED = 4
"""Shorter secret values are not masked: replacing every ``1`` or ``on`` would garble the logs."""


def masking(secrets: Iterable[str]) -> Callable[[str], str]:
    """A function that replaces every secret value in a line by ``******`` (each line of a
    multi-line value too, since logs are read line by line)."""
    parts = {part for value in secrets for part in (value, *value.splitlines()) if len(part) >= MIN_MASKED}
    if not parts:
        return lambda line: line
    pattern = re.compile("|".join(re.escape(part) for part in sorted(parts, key=len, reverse=True)))
    return lambda line: pattern.sub(SCRUBBED, line)


def tail_lines(path: Path, count: int, block: int = 8192) -> list[str]:
    """The last ``count`` lines of a file, read backwards from its end."""
    if count <= 0:
        return []
    try:
        with open(path, "rb") as file:
            end = file.seek(0, os.SEEK_END)
            data = b""
            while end > 0 and data.count(b"\n") <= count:
                start = max(0, end - block)
                file.seek(start)
                data = file.read(end - start) + data
                end = start
    except OSError:
        return []
    return data.decode("utf-8", "replace").splitlines()[-count:]


def note(path: Path, message: str, source: str = "flowport runtime") -> None:
    """Append a line from the runtime itself to an instance's log (restarts, kills)."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with contextlib.suppress(OSError), open(path, "a", encoding="utf-8") as file:
        file.write(f"{stamp} {source}: {message}\n")


def _safe(name: str) -> str:
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise ValueError(f"not usable as a folder name: {name!r}")
    return name


class LogFiles:
    def __init__(self, root: Path, keep: int = KEEP_FILES) -> None:
        self.root = root
        self.keep = keep

    def folder(self, key: DeploymentKey) -> Path:
        return self.root / _safe(key.endpoint) / _safe(key.deployment)

    def _files(self, key: DeploymentKey) -> list[Path]:
        """The deployment's log files, oldest first (by modification time)."""
        stamped = []
        for path in self.folder(key).glob("*.log"):
            with contextlib.suppress(OSError):
                stamped.append((path.stat().st_mtime, path))
        return [path for _, path in sorted(stamped)]

    def new_file(self, key: DeploymentKey, instance_id: str, live: Collection[Path] = ()) -> Path:
        """The path of a new instance's log; drops the oldest files of instances long gone."""
        folder = self.folder(key)
        folder.mkdir(parents=True, exist_ok=True)
        old = [path for path in self._files(key) if path not in live]
        for path in old[: max(0, len(old) - self.keep)]:
            with contextlib.suppress(OSError):
                path.unlink()
            with contextlib.suppress(OSError):
                path.with_suffix(TRACE_SUFFIX).unlink()
        path = folder / f"{instance_id}.log"
        path.touch()
        return path

    def provisioning(self, key: DeploymentKey) -> Callable[[str], None]:
        """A writer of the deployment's ``provisioning.log`` (environment builds), shown by ``tail``."""
        folder = self.folder(key)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "provisioning.log"
        return lambda line: note(path, line, source="provisioning")

    def tail(self, key: DeploymentKey, lines: int) -> list[str]:
        """The last ``lines`` lines over all the deployment's files, each prefixed with its instance id."""
        collected: list[str] = []
        for path in reversed(self._files(key)):
            if len(collected) >= lines:
                break
            chunk = [f"[{path.stem}] {line}" for line in tail_lines(path, lines - len(collected))]
            collected = chunk + collected
        return collected
