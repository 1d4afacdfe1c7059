"""The ``package_tools`` entry point: the tool specs in ``yamls/``."""

from pathlib import Path


def _load(text):
    try:
        from ruamel.yaml import YAML  # what prompt flow installs
    except ImportError:
        import yaml  # what flowport installs

        return yaml.safe_load(text)
    return YAML(typ="safe").load(text)


def list_package_tools():
    tools = {}
    for file in sorted((Path(__file__).parent / "yamls").glob("*.yaml")):
        tools.update(_load(file.read_text(encoding="utf-8")))
    return tools
