from promptflow.core import tool
from promptflow.tools.common import build_messages, parse_chat


@tool
def parse_in_code(question: str) -> list:
    parsed = parse_chat(f"# system:\nBe brief.\n# user:\n{question}\n## assistant:\nSure.")
    built = build_messages("# system:\nTemplate {{n}}.\n# user:\n{{question}}", n=2, question=question)
    return parsed + built
