"""A flex flow class whose init takes a model configuration: a dict given becomes one."""

from promptflow.core import AzureOpenAIModelConfiguration, OpenAIModelConfiguration


class Configured:
    def __init__(self, model_config: OpenAIModelConfiguration, azure: AzureOpenAIModelConfiguration = None):
        self.config = model_config
        self.azure = azure

    def __call__(self, text: str):
        config, azure = self.config, self.azure
        return {
            "type": type(config).__name__,
            "model": config.model,
            "base_url_ends_with_v1": (config.base_url or "").endswith("/v1"),
            "api_key": config.api_key,
            "connection": config.connection,
            "azure_type": type(azure).__name__,
            "azure_deployment": getattr(azure, "azure_deployment", None),
            "text": text,
        }
