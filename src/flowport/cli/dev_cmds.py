"""``flowport dev``: developer tools."""

from __future__ import annotations

import typer

app = typer.Typer(help="Developer tools.", no_args_is_help=True)


@app.command("llm-server")
def llm_server(
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8555, "--port"),
    latency_ms: float = typer.Option(0.0, "--latency-ms", help="Delay before each answer."),
    chunk_delay_ms: float = typer.Option(0.0, "--chunk-delay-ms", help="Delay between streamed chunks."),
) -> None:
    """Run the offline OpenAI-compatible test LLM server (deterministic 'Echo: ...' replies)."""
    from flowport.testing.llm_server import serve

    typer.echo(f"test LLM server on http://{host}:{port}/v1 (latency {latency_ms:g} ms)", err=True)
    serve(host, port, latency_ms, chunk_delay_ms)
