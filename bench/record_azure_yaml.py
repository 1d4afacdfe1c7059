"""Record what Azure ML's own SDK (``azure-ai-ml``) makes of the YAML corpus under tests/azure_yaml.

Every ``*.yml`` under ``tests/azure_yaml/{endpoint,deployment,model}/`` is loaded with the SDK's
``load_online_endpoint``, ``load_online_deployment`` or ``load_model`` (the loaders ``az ml``
uses: PyYAML's safe loader, then the SDK's schemas), in a virtualenv of its own:
``FLOWPORT_BENCH_AZML_VENV`` or ``bench/.venv-azure-ai-ml``, created and populated when it lacks
the SDK. ``tests/azure_yaml/recorded.json`` then holds, per file, either ``{"accepted": true,
"value": ...}`` (the entity as the SDK dumps it, paths made relative to the repository) or
``{"accepted": false, "errors": {"field.path": [messages]}}``. tests/test_azure_yaml.py checks
that flowport reads every file the same way. Run: ``python bench/record_azure_yaml.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "azure_yaml"
VENV_ENV = "FLOWPORT_BENCH_AZML_VENV"
DEFAULT_VENV = Path(__file__).resolve().parent / ".venv-azure-ai-ml"
PACKAGE = "azure-ai-ml"

# Runs inside the SDK's venv: one JSON object {file: record} on stdout.
_WORKER = r"""
import json, sys, warnings
from pathlib import Path
warnings.filterwarnings("ignore")
import logging
logging.disable(logging.CRITICAL)
from azure.ai.ml import load_model, load_online_deployment, load_online_endpoint

LOADERS = {"endpoint": load_online_endpoint, "deployment": load_online_deployment, "model": load_model}
corpus, root = Path(sys.argv[1]), Path(sys.argv[2])


def flatten(messages, prefix=""):
    if isinstance(messages, dict):
        out = {}
        for key, value in messages.items():
            path = f"{prefix}.{key}" if prefix and key != "_schema" else (prefix or str(key))
            for k, v in flatten(value, path).items():
                out.setdefault(k, []).extend(v)
        return out
    if isinstance(messages, list) and any(isinstance(m, dict | list) for m in messages):
        out = {}
        for item in messages:
            for k, v in flatten(item, prefix).items():
                out.setdefault(k, []).extend(v)
        return out
    return {prefix: [str(m) for m in (messages if isinstance(messages, list) else [messages])]}


def relative(value, folder):
    if isinstance(value, dict):
        return {k: relative(v, folder) for k, v in value.items()}
    if isinstance(value, list):
        return [relative(v, folder) for v in value]
    if isinstance(value, str) and value.startswith(str(folder)):
        return str(Path(value).relative_to(folder)) or "."
    return value


records = {}
for kind, load in LOADERS.items():
    for file in sorted((corpus / kind).glob("*.yml")):
        key = f"{kind}/{file.name}"
        try:
            entity = load(str(file))
        except Exception as exc:
            text = str(exc)
            start, end = text.find("{"), text.rfind("}")
            try:
                errors = flatten(json.loads(text[start : end + 1]))
            except ValueError:
                errors = {"": [text.strip().splitlines()[0]]}
            records[key] = {"accepted": False, "errors": errors}
            continue
        value = json.loads(json.dumps(entity._to_dict(), default=str))
        records[key] = {"accepted": True, "value": relative(value, root.resolve())}
print(json.dumps(records))
"""


def venv_python() -> Path:
    folder = Path(os.environ.get(VENV_ENV) or DEFAULT_VENV).expanduser().resolve()
    python = folder / "bin" / "python"
    probe = [str(python), "-c", "import azure.ai.ml"]
    if not python.is_file() or subprocess.run(probe, capture_output=True, check=False).returncode:
        print(f"installing {PACKAGE} into {folder} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", PACKAGE], check=True)
    return python


def main() -> None:
    python = venv_python()
    version = subprocess.run(
        [str(python), "-c", f"import importlib.metadata as m; print(m.version('{PACKAGE}'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    done = subprocess.run(
        [str(python), "-c", _WORKER, str(CORPUS), str(ROOT)], capture_output=True, text=True, check=False
    )
    if done.returncode:
        sys.exit(f"the {PACKAGE} worker failed:\n{done.stderr[-3000:]}")
    records = json.loads(done.stdout)
    result = {"recorded_with": f"{PACKAGE}=={version}", "files": records}
    text = json.dumps(result, indent=2, sort_keys=True) + "\n"
    (CORPUS / "recorded.json").write_text(text, encoding="utf-8")
    accepted = sum(r["accepted"] for r in records.values())
    refused = len(records) - accepted
    print(f"{len(records)} files: {accepted} accepted, {refused} refused ({PACKAGE} {version})")


if __name__ == "__main__":
    main()
