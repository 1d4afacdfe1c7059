"""The files of a flow folder, and ``additional_includes``.

``flow_files`` lists what belongs to a flow: every regular file below its folder, with
symbolic links followed only while they stay inside it (a link out of the folder, a loop or
a dangling link is an error naming the link). ``copy_files`` copies such a listing and hashes
exactly the bytes it copies, so a snapshot's content hash always describes the snapshot.

As prompt flow does, each ``additional_includes`` entry (a path relative to the flow folder)
is placed at the root of a copy of the flow under its own base name. The copy is made in a
private folder created fresh for each load (``mkdtemp``, mode 0700), never reused: nothing
another user can write to ends up in a flow.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

import yaml

from flowport.flow.errors import FlowError
from flowport.flow.yaml import load_yaml_file, to_plain

_SKIP_DIRS = {"__pycache__", ".promptflow", ".git", ".venv", "node_modules"}
_CHUNK = 1024 * 1024


def flow_files(root: Path) -> dict[str, Path]:
    """``{relative posix path: real file}`` for every regular file below ``root`` (or ``root`` itself).

    Caches (``__pycache__``, ``.git``, ...) are skipped. Raises FlowError for a symbolic link
    that leads outside ``root``, dangles, or loops.
    """
    base = root.resolve()
    if base.is_file():
        return {base.name: base}
    files: dict[str, Path] = {}
    _walk(base, base, "", frozenset({base}), files)
    return files


def _walk(base: Path, folder: Path, prefix: str, ancestors: frozenset[Path], files: dict[str, Path]) -> None:
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        raise FlowError.single(
            "FileNotReadable", f"cannot list {folder}: {exc.strerror or exc}", str(folder)
        ) from None
    subfolders: list[tuple[str, Path]] = []
    for entry in entries:
        path = Path(entry.path)
        target = _follow(base, path) if entry.is_symlink() else path
        if target.is_dir():
            if entry.name not in _SKIP_DIRS:
                subfolders.append((entry.name, target))
        elif target.is_file():
            files[prefix + entry.name] = target
    for name, target in subfolders:
        if target in ancestors:
            raise FlowError.single(
                "SymlinkLoop",
                f"{folder / name} is a symbolic link to {target}, a folder that contains it; remove the link",
                str(folder / name),
            )
        _walk(base, target, f"{prefix}{name}/", ancestors | {target}, files)


def _follow(base: Path, link: Path) -> Path:
    """The real path of a symbolic link below ``base``: it must exist and stay inside ``base``."""
    try:
        target = link.resolve(strict=True)
    except (OSError, RuntimeError) as exc:
        looped = isinstance(exc, RuntimeError) or getattr(exc, "errno", None) == 40
        what = (
            "is part of a symbolic link loop"
            if looped
            else f"points to {os.readlink(link)}, which does not exist"
        )
        raise FlowError.single(
            "SymlinkLoop" if looped else "SymlinkBroken", f"the symbolic link {link} {what}", str(link)
        ) from None
    if not target.is_relative_to(base):
        raise FlowError.single(
            "SymlinkOutsideFlow",
            f"the symbolic link {link} points to {target}, outside the flow folder {base}; "
            "copy the files into the folder or list them under additional_includes",
            str(link),
        )
    return target


def content_hash(files: Mapping[str, Path]) -> str:
    """A digest over the names and bytes of a ``flow_files`` listing (what ``copy_files`` returns)."""
    digest = hashlib.sha256()
    for rel, path in files.items():
        _add(digest, rel)
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


def copy_files(files: Mapping[str, Path], target: Path) -> str:
    """Copy a ``flow_files`` listing below ``target``; return the digest of the bytes copied."""
    digest = hashlib.sha256()
    for rel, path in files.items():
        dest = target / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        _add(digest, rel)
        with path.open("rb") as src, dest.open("wb") as out:
            while chunk := src.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
        digest.update(b"\0")
        shutil.copymode(path, dest)
    return digest.hexdigest()


def _add(digest: hashlib._Hash, rel: str) -> None:
    digest.update(f"./{rel}\0".encode())


def drop_includes(flow_file: Path) -> None:
    """A copy that holds the included files already: its flow file must not look for them."""
    raw = to_plain(load_yaml_file(flow_file))
    raw.pop("additional_includes", None)
    flow_file.write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True), encoding="utf-8")


def materialize_includes(
    flow_dir: Path, flow_file: str, includes: list[str], parent: Path | None = None
) -> Path:
    """A fresh private folder holding the flow plus its additional includes.

    Made below ``parent`` when given (its owner removes it); otherwise in the temp dir and
    removed when the process exits.
    """
    files = flow_files(flow_dir)
    for entry in includes:
        try:
            src = (flow_dir / str(entry)).resolve()
        except RuntimeError:  # a symlink loop
            raise FlowError.single(
                "SymlinkLoop",
                f"additional_includes entry {entry!r} is part of a symbolic link loop",
                str(flow_dir / flow_file),
            ) from None
        if not src.exists():
            raise FlowError.single(
                "IncludeNotFound",
                f"additional_includes entry {entry!r} does not exist (looked for {src})",
                str(flow_dir / flow_file),
            )
        if src.is_file():
            files[src.name] = src
        else:
            files.update({f"{src.name}/{rel}": path for rel, path in flow_files(src).items()})
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    target = Path(tempfile.mkdtemp(prefix="flowport-flow-", dir=parent))
    if parent is None:
        atexit.register(shutil.rmtree, target, ignore_errors=True)
    try:
        copy_files(files, target)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    return target
