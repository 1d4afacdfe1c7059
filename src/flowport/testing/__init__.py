"""Test helpers: an offline OpenAI-compatible LLM server (:mod:`flowport.testing.llm_server`), OTLP
receivers (:mod:`flowport.testing.otlp`)."""
