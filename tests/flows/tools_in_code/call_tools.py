from promptflow.connections import AzureOpenAIConnection, OpenAIConnection
from promptflow.core import tool
from promptflow.tools.aoai import chat as azure_chat
from promptflow.tools.embedding import embedding
from promptflow.tools.openai import chat, completion


@tool
def call_tools(openai: OpenAIConnection, azure: AzureOpenAIConnection, question: str) -> dict:
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}]
    return {
        "chat": chat(connection=openai, prompt="# system:\nBe brief.\n# user:\n{{q}}", model="test-model", q=question),
        "azure_chat": azure_chat(
            connection=azure, prompt="# user:\nAzure {{q}}", deployment_name="test-deployment", q=question
        ),
        "completion": completion(connection=openai, prompt="Complete {{q}}", model="test-model", q=question),
        "tool_call": chat(
            connection=openai, prompt="# user:\n[[call:lookup]] {{q}}", model="test-model", tools=tools, q=question
        ),
        "streamed": list(chat(connection=openai, prompt="# user:\n{{q}}", model="test-model", stream=True, q=question)),
        "embedding": embedding(connection=openai, input=question),
    }
