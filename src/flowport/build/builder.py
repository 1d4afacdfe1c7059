"""Running an image build: ``docker build`` when a Docker daemon answers, else ``buildah bud``.

pip inside the build is given this machine's pip settings as build secrets (never layers): the
index URLs it reaches over HTTP(S) as a pip.conf, and the CA bundle it trusts (``PIP_CERT`` or
pip's ``cert`` setting: a proxy's CA).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from flowport.build.context import BuildError
from flowport.build.image import PIP_CERT_SECRET, PIP_CONFIG_SECRET

BUILDERS = ("auto", "docker", "buildah")
_PIP_KEYS = ("index-url", "extra-index-url", "trusted-host")


def docker_works() -> bool:
    """A ``docker`` client whose daemon answers (``docker info``)."""
    if shutil.which("docker") is None:
        return False
    try:
        done = subprocess.run(["docker", "info"], capture_output=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def choose_builder(preferred: str = "auto") -> str:
    """``docker`` or ``buildah``: the one asked for, or the first that works."""
    if preferred not in BUILDERS:
        raise BuildError(f"--builder must be one of {', '.join(BUILDERS)}, got {preferred!r}")
    if preferred in ("auto", "docker") and docker_works():
        return "docker"
    if preferred == "docker":
        raise BuildError(
            "docker does not answer here (docker info fails); start its daemon or use --builder buildah"
        )
    if shutil.which("buildah") is not None:
        return "buildah"
    raise BuildError(
        "no image builder here: neither a running Docker daemon nor buildah "
        "(Debian/Ubuntu: apt-get install -y buildah)"
    )


def pip_settings(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """This machine's pip settings a build can use: index URLs (HTTP(S) only), trusted hosts, cert."""
    env = os.environ if environ is None else environ
    found: dict[str, str] = {}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=dict(env),
        )
        lines = done.stdout.splitlines()
    except (OSError, subprocess.TimeoutExpired):
        lines = []
    for line in lines:  # e.g. global.cert='/etc/ssl/certs/ca.crt' or :env:.index-url='...'
        key, sep, value = line.partition("=")
        if sep:
            found[key.rpartition(".")[2]] = value.strip().strip("'\"")
    for key in (*_PIP_KEYS, "cert"):
        value = env.get("PIP_" + key.upper().replace("-", "_"))
        if value:
            found[key] = value
    settings = {k: v for k, v in found.items() if k in (*_PIP_KEYS, "cert")}
    for key in ("index-url", "extra-index-url"):
        if key in settings:
            urls = [u for u in settings[key].split() if u.startswith(("http://", "https://"))]
            if urls:
                settings[key] = " ".join(urls)
            else:
                del settings[key]
    return settings


def pip_secrets(folder: Path, settings: Mapping[str, str]) -> dict[str, Path]:
    """Build secrets from ``pip_settings``: a pip.conf and the CA bundle, written under ``folder``
    (keep it out of the build context)."""
    secrets: dict[str, Path] = {}
    lines = [f"{key} = {settings[key]}" for key in _PIP_KEYS if settings.get(key)]
    if lines:
        conf = folder / "pip.conf"
        conf.write_text("[global]\n" + "\n".join(lines) + "\n", encoding="utf-8")
        conf.chmod(0o600)
        secrets[PIP_CONFIG_SECRET] = conf
    cert = settings.get("cert")
    if cert and Path(cert).is_file():
        secrets[PIP_CERT_SECRET] = Path(cert)
    return secrets


def build_command(
    builder: str,
    context: Path,
    tag: str,
    *,
    base_image: str | None = None,
    dockerfile: Path | None = None,
    secrets: Mapping[str, Path] = {},
) -> list[str]:
    """The command line that builds ``context`` into ``tag``."""
    if builder == "docker":
        command = ["docker", "build"]
    else:
        # chroot isolation builds where no user namespace can be made (containers, CI);
        # --format docker keeps HEALTHCHECK; --layers reuses unchanged steps.
        command = ["buildah", "bud", "--layers", "--format", "docker"]
        if not os.environ.get("BUILDAH_ISOLATION"):
            command += ["--isolation", "chroot"]
    command += ["--tag", tag]
    if dockerfile is not None:
        command += ["--file", str(dockerfile)]
    if base_image:
        command += ["--build-arg", f"BASE_IMAGE={base_image}"]
    for name, path in secrets.items():
        command += ["--secret", f"id={name},src={path}"]
    return [*command, str(context)]


def run_build(command: Sequence[str]) -> None:
    """Run a build, its output on stderr; a failure raises ``BuildError`` with the last lines."""
    env = {**os.environ, "DOCKER_BUILDKIT": "1"}  # RUN --mount needs BuildKit
    process = subprocess.Popen(
        list(command), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    tail: list[str] = []
    assert process.stdout is not None
    for line in process.stdout:
        sys.stderr.write(line)
        tail = [*tail[-9:], line.rstrip()]
    code = process.wait()
    if code != 0:
        shown = "\n".join(tail)
        raise BuildError(f"{command[0]} exited with code {code}; its last lines:\n{shown}")
