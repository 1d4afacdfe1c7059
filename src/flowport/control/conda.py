"""An Azure environment's ``conda_file``, read as the pip requirements flowport can install.

Instances run in virtualenvs, not conda environments. So a conda file's ``pip:`` list is
installed as it is (local paths made absolute: pip runs elsewhere), ``python`` is checked
against the instances' interpreter (never installed), ``pip`` is already there, and the
other conda packages are installed from pip under their pip names. A conda package that
has no pip equivalent (a system library, a CUDA toolkit, an R package) is an error naming
the file, the line and what to do.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowport.flow.errors import FlowError, Problem
from flowport.flow.yaml import YamlMap, load_yaml_file, to_plain

PIP_NAMES = {
    "pytorch": "torch",
    "pytorch-cpu": "torch",
    "py-xgboost": "xgboost",
    "py-lightgbm": "lightgbm",
    "matplotlib-base": "matplotlib",
    "pytables": "tables",
    "msgpack-python": "msgpack",
    "pyqt": "PyQt5",
    "tensorflow-base": "tensorflow",
}
"""Conda packages whose pip distribution has another name."""
CONDA_ONLY = frozenset(
    {
        "cudatoolkit", "cudnn", "cuda-toolkit", "cuda-nvcc", "nccl", "cuda", "blas", "openblas",
        "libblas", "libcblas", "liblapack", "mkl-devel", "libgcc-ng", "libstdcxx-ng", "libgomp",
        "_libgcc_mutex", "_openmp_mutex", "ld_impl_linux-64", "openssl", "ca-certificates", "libffi",
        "zlib", "xz", "tk", "sqlite", "readline", "ncurses", "bzip2", "libuuid", "gcc", "gxx",
        "gcc_linux-64", "gxx_linux-64", "make", "nodejs", "r-base", "conda", "mamba", "ffmpeg",
        "libpq", "unixodbc", "git", "curl", "tzdata",
    }
)  # fmt: skip
"""Conda packages that are not Python distributions: pip cannot install them."""
_NOT_PYTHON = re.compile(r"^(r-|lib[a-z0-9_]+-ng$|_)")
_SPEC = re.compile(r"^\s*(?:(?P<channel>[^:\s]+)::)?(?P<name>[A-Za-z0-9_.\-]+)\s*(?P<version>.*)$")
_LOCAL = re.compile(r"^(\.{1,2}/|/|~/|file:)")


@dataclass(frozen=True)
class CondaEnvironment:
    pip: tuple[str, ...]
    """Requirement lines for pip, in order."""
    notes: tuple[str, ...] = ()
    document: dict[str, Any] = field(default_factory=dict)
    """The file's mapping as plain data (what an environment version keeps)."""


def _line_of(text: str, item: str, fallback: int | None) -> int | None:
    for number, line in enumerate(text.splitlines(), 1):
        if re.match(rf"^\s*-\s*['\"]?{re.escape(item)}['\"]?\s*(#.*)?$", line):
            return number
    return fallback


def _pip_version(version: str) -> str:
    """A conda version spec (``=1.26``, ``1.26.*``, ``>=1.2,<2``, ``=1.26.4=py311_0``) for pip."""
    version = version.strip()
    if not version:
        return ""
    if version.startswith(("==", ">=", "<=", "!=", ">", "<", "~=")):
        return version.replace(" ", "")
    version = version.lstrip("=").split("=")[0].split(" ")[0]  # a build string is dropped
    if not version:
        return ""
    return f"=={version}" if "*" in version or version.count(".") >= 2 else f"=={version}.*"


def _python_matches(version: str) -> bool:
    """``python=3.11`` / ``python=3.11.4`` / ``python>=3.10``: does the instances' Python fit?"""
    running = sys.version_info
    spec = version.strip()
    if not spec:
        return True
    if spec.startswith((">", "<", "!", "~")):
        try:
            from packaging.specifiers import InvalidSpecifier, SpecifierSet
        except ImportError:  # pip's own vendored copy is not importable here: leave it to pip
            return True
        try:
            return f"{running.major}.{running.minor}.{running.micro}" in SpecifierSet(spec.replace(" ", ""))
        except InvalidSpecifier:
            return False
    wanted = spec.lstrip("=").split("=")[0].split(" ")[0].rstrip(".*").split(".")
    have = [str(running.major), str(running.minor), str(running.micro)]
    return wanted == have[: len(wanted)]


def read_conda_file(path: Path, shown: str | None = None, base: Path | None = None) -> CondaEnvironment:
    """The pip requirements of a conda environment file; FlowError naming file and line if it has none.

    Local paths in the ``pip:`` list are relative to ``base`` (default: the file's folder)."""
    file = shown or str(path)
    try:
        raw = load_yaml_file(path)
        text = path.read_text(encoding="utf-8")
    except FlowError:
        raise
    except OSError as exc:
        raise FlowError.single(
            "CondaFileNotReadable", f"cannot read the conda file: {exc.strerror}", file
        ) from None
    if not isinstance(raw, dict):
        raise FlowError.single(
            "InvalidCondaFile", "a conda file must be a mapping with dependencies", file, 1
        )
    dependencies = raw.get("dependencies") or []
    line = raw.line_of("dependencies") if isinstance(raw, YamlMap) else None
    if not isinstance(dependencies, list):
        raise FlowError.single("InvalidCondaFile", "dependencies: must be a list", file, line)
    problems: list[Problem] = []
    pip: list[str] = []
    notes: list[str] = []
    if raw.get("channels"):
        notes.append("channels: packages come from pip's index, not conda channels")
    for item in dependencies:
        if isinstance(item, dict) and "pip" in item:
            entries = item["pip"] or []
            if not isinstance(entries, list):
                problems.append(Problem("InvalidCondaFile", "dependencies.pip: must be a list", file, line))
                continue
            pip += [absolute_requirement(str(entry), base or path.parent) for entry in entries]
            continue
        if not isinstance(item, str | int | float):
            problems.append(
                Problem(
                    "InvalidCondaFile", f"dependencies: {item!r} is not a package or a pip list", file, line
                )
            )
            continue
        requirement = _conda_requirement(str(item), file, _line_of(text, str(item), line), problems)
        if requirement:
            pip.append(requirement)
    if problems:
        raise FlowError(problems)
    return CondaEnvironment(tuple(pip), tuple(notes), to_plain(raw))


def _conda_requirement(item: str, file: str, line: int | None, problems: list[Problem]) -> str | None:
    match = _SPEC.match(item)
    if match is None:
        problems.append(
            Problem("InvalidCondaFile", f"dependencies: {item!r} is not a conda package spec", file, line)
        )
        return None
    name, version = match["name"].lower(), match["version"]
    if name == "python":
        if not _python_matches(version):
            running = ".".join(map(str, sys.version_info[:3]))
            problems.append(
                Problem(
                    "PythonVersionMismatch",
                    f"dependencies: {item!r} asks for another Python; instances run Python {running}: "
                    "change the conda file or run flowport with that Python",
                    file,
                    line,
                )
            )
        return None
    if name == "pip":
        return None
    if name in CONDA_ONLY or _NOT_PYTHON.match(name):
        problems.append(
            Problem(
                "CondaOnlyPackage",
                f"dependencies: {item!r} is a conda package with no pip equivalent; instances run in a "
                "virtualenv: install it on the machine, or remove it from the conda file",
                file,
                line,
            )
        )
        return None
    return PIP_NAMES.get(name, match["name"]) + _pip_version(version)


def absolute_requirement(entry: str, base: Path) -> str:
    """A pip line with its local path (``./x.whl``, ``-e ../pkg``, ``-r reqs.txt``) made absolute."""
    entry = entry.strip()
    for flag in ("-r ", "--requirement ", "-e ", "--editable ", "-c ", "--constraint "):
        if entry.startswith(flag):
            target = entry[len(flag) :].strip()
            return f"{flag}{_absolute_path(target, base) if not _is_url(target) else target}"
    if _LOCAL.match(entry) or ((base / entry).exists() and not _is_url(entry)):
        return _absolute_path(entry, base)
    return entry


def _is_url(text: str) -> bool:
    return "://" in text and not text.startswith("file:")


def _absolute_path(target: str, base: Path) -> str:
    target = target.removeprefix("file:")
    return str((base / Path(target).expanduser()).resolve())
