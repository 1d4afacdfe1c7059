"""``promptflow.contracts.types``: marker string types used in tool signatures."""


class PromptTemplate(str):
    """A jinja2 template passed to a tool."""


class Secret(str):
    """A secret string."""


class FilePath(str):
    """A path to a file in the flow folder."""


__all__ = ["FilePath", "PromptTemplate", "Secret"]
