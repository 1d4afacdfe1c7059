from promptflow.core import tool
from promptflow.tools.common import parse_chat


@tool
def parse_in_code(question: str) -> list:
    return parse_chat(f"# system:\nBe brief.\n# user:\n{question}\n## assistant:\nSure.")
