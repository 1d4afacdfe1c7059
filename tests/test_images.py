"""Image flows give prompt flow 1.18.5's outputs (recorded by bench/record_images.py).

``tests/flows/image_flow`` and ``image_serve`` take ``image`` inputs in every form prompt flow reads
(a path, base64, a data URI, ``{"data:image/png;path|base64|url": ...}``, media dicts inside lists
and objects), hand them to python tools and to the vision chat tools, and output images. pf wrote
each output image to a file (``<uuid>.<ext>``) and answered its path: the recordings keep pf's
answer with the folder shown as ``{flow}`` and each file's bytes in ``expected_images``; here
flowport's answer must have the same shape, its files the same folder, extension and bytes.
Serving (``/score`` answering base64) is replayed from tests/serve_recordings by
test_serving_parity.py.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from flowport.connections import ConnectionResolver, ConnectionService
from flowport.engine import FlowExecutor, load_executor
from flowport.engine.bulk import BulkRunner, read_jsonl
from flowport.serving import ScoringApp, ServeSettings
from flowport.testing.llm_server import LLMServer
from flowport.testing.threaded_server import ThreadedServer
from flowport.tools.compat import SHIM_ROOT
from flowport.tools.multimedia import (
    ALLOW_PRIVATE_ENV,
    Image,
    InvalidImageInput,
    fetch_image,
    guess_image_mime,
)
from tests.conftest import FLOWS
from tests.test_cli import flowport
from tests.test_prompt_flow_parity import line_statuses

IMAGE_FLOWS = ("image_flow", "image_serve", "image_flex")


def _cases(kind: str) -> list[Any]:
    params = []
    for name in IMAGE_FLOWS:
        for case in json.loads((FLOWS / name / "cases.json").read_text()):
            if kind == case.get("kind", "test") and (
                kind == "bulk" or (kind in ("test",) and "expected" in case)
            ):
                params.append(pytest.param(name, case, id=f"{name}-{case['id']}"))
    return params


def _error_cases() -> list[Any]:
    return [
        pytest.param(name, case, id=f"{name}-{case['id']}")
        for name in IMAGE_FLOWS
        for case in json.loads((FLOWS / name / "cases.json").read_text())
        if "expected_error" in case
    ]


def assert_same_images(
    actual: Any, expected: Any, files: dict[str, str], folder: Path, relative: bool
) -> None:
    """``actual`` equals ``expected`` except image paths: each of flowport's image files is in
    ``folder`` as pf's was in the same folder (``{flow}`` standing for the flow, in flow test), named
    by an absolute path (or one relative to ``folder`` when ``relative``), with pf's extension and
    pf's bytes (``files``, keyed by pf's path)."""
    if isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), (actual, expected)
        for a, e in zip(actual, expected, strict=True):
            assert_same_images(a, e, files, folder, relative)
        return
    if isinstance(expected, dict) and len(expected) == 1 and next(iter(expected)).endswith(";path"):
        key, pf_path = next(iter(expected.items()))
        assert isinstance(actual, dict) and list(actual) == [key], (actual, expected)
        ours = Path(actual[key])
        assert ours.is_absolute() != relative, ours
        file = folder / ours if relative else ours
        assert file.parent == folder, (file, folder)
        assert file.suffix == Path(pf_path).suffix
        assert Path(pf_path).is_absolute() != relative or pf_path.startswith("{flow}/"), pf_path
        pf_folder = Path(pf_path).parent.as_posix().replace("{flow}", str(folder.parent.parent))
        assert pf_folder == (folder if not relative else Path(".")).as_posix(), (pf_folder, folder)
        assert file.read_bytes() == base64.b64decode(files[pf_path])
        return
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and set(actual) == set(expected), (actual, expected)
        for key, value in expected.items():
            assert_same_images(actual[key], value, files, folder, relative)
        return
    assert actual == expected


_STREAMING = ("stream", "stream_options")


def _unstreamed(request: dict[str, Any]) -> dict[str, Any]:
    body = {k: v for k, v in request["body"].items() if k not in _STREAMING}
    return {"path": request["path"], "body": body}


def _same_requests(server: LLMServer, recorded: list[dict[str, Any]]) -> None:
    """The requests pf sent, as a multiset (nodes run concurrently), streaming aside: ``flowport
    flow test`` streams an LLM output to show it as it arrives (README), ``pf flow test`` does not."""
    unmatched = [_unstreamed(r) for r in httpx.get(f"{server.url}/_requests").json()]
    for request in map(_unstreamed, recorded):
        assert request in unmatched, (request, unmatched)
        unmatched.remove(request)
    assert not unmatched


@pytest.mark.parametrize(("name", "case"), _cases("test"))
def test_flow_test_writes_images_as_pf_flow_test(
    name: str,
    case: dict[str, Any],
    openai_connection: ConnectionService,
    llm_server: LLMServer,
    home: Path,
    tmp_path: Path,
) -> None:
    flow = tmp_path / name
    shutil.copytree(FLOWS / name, flow)
    inputs = tmp_path / "inputs.json"
    inputs.write_text(json.dumps(case["inputs"]))
    httpx.delete(f"{llm_server.url}/_requests")
    done = flowport("flow", "test", "--flow", str(flow), "--inputs-file", str(inputs), home=home)
    assert done.returncode == 0, done.stderr
    output = flow / ".promptflow" / "output"
    expected = case["expected_printed"]  # what pf printed: absolute paths under .promptflow/output
    assert_same_images(json.loads(done.stdout), expected, case["expected_images"], output, False)
    _same_requests(llm_server, case.get("llm_requests", []))


@pytest.mark.parametrize(("name", "case"), _error_cases())
async def test_bad_image_inputs_fail_as_in_pf(
    name: str, case: dict[str, Any], openai_connection: ConnectionService
) -> None:
    executor = FlowExecutor.load(FLOWS / name, connections=ConnectionResolver(openai_connection))
    try:
        result = await executor.run_line(case["inputs"], line_number=0)
    finally:
        executor.close()
    assert result.error is not None
    expected = case["expected_error"]
    assert (result.error.code, result.error.message) == (expected["code"], expected["message"])
    assert result.error.inner_code == expected["inner_code"]


@pytest.mark.parametrize(("name", "case"), _cases("bulk"))
async def test_bulk_run_writes_images_as_pf_run_create(
    name: str, case: dict[str, Any], openai_connection: ConnectionService, tmp_path: Path
) -> None:
    flow = tmp_path / name
    shutil.copytree(FLOWS / name, flow)
    executor = FlowExecutor.load(flow, connections=ConnectionResolver(openai_connection))
    run = tmp_path / "run"
    try:
        await BulkRunner(executor, concurrency=2).run(
            read_jsonl(flow / case["data"]), run, column_mapping=case.get("column_mapping")
        )
    finally:
        executor.close()
    lines = [json.loads(x) for x in (run / "outputs.jsonl").read_text().splitlines()]
    lines.sort(key=lambda x: x["line_number"])
    assert_same_images(lines, case["expected_outputs"], case["expected_images"], run, True)
    expected = [
        {**s, "error_message": s["error_message"] and s["error_message"].replace("{data}", str(flow))}
        for s in case["expected_line_status"]
    ]
    assert line_statuses(run) == expected


# -- flowport's own: URLs, the stand-in, type guessing ----------------------------------------

RED = (FLOWS / "image_flow" / "red.png").read_bytes()


def _image_host() -> ThreadedServer:
    async def red(request: Request) -> Response:
        return Response(RED, media_type="image/png")

    async def moved(request: Request) -> Response:
        return RedirectResponse("/red.png")

    async def gone(request: Request) -> Response:
        return Response("no such picture", 404)

    routes = [Route("/red.png", red), Route("/moved", moved), Route("/gone", gone)]
    return ThreadedServer(Starlette(routes=routes)).start()


async def test_url_images_are_fetched_only_from_allowed_addresses(
    openai_connection: ConnectionService, llm_server: LLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = _image_host()
    executor = FlowExecutor.load(FLOWS / "image_flow", connections=ConnectionResolver(openai_connection))
    try:
        url = f"{host.url}/red.png"
        refused = await executor.run_line({"image": url}, line_number=0)
        assert refused.error is not None
        assert refused.error.message.endswith(f"(InvalidImageInput) Failed to fetch image from URL: {url}.")

        monkeypatch.setenv(ALLOW_PRIVATE_ENV, "true")
        httpx.delete(f"{llm_server.url}/_requests")
        result = await executor.run_line(
            {"image": {"data:image/png;url": f"{host.url}/moved"}}, line_number=0
        )
        assert result.error is None, result.error
        seen = result.outputs["inspected"]["image"]
        assert (seen["size"], seen["mime"], seen["source_url"]) == (
            len(RED),
            "image/png",
            f"{host.url}/moved",
        )
        # an image from a URL reaches the model as that URL
        assert (
            result.outputs["openai_vision"]
            == f"Echo: What is in this image?  [image {host.url}/moved] Answer briefly."
        )

        missing = await executor.run_line({"image": f"{host.url}/gone"}, line_number=0)
        assert missing.error is not None
        assert "Error code: 404. Error message: no such picture." in missing.error.message
    finally:
        executor.close()
        host.stop()


def test_flow_test_answers_a_url_image_as_its_url(
    openai_connection: ConnectionService, home: Path, tmp_path: Path
) -> None:
    flow = tmp_path / "image_serve"
    shutil.copytree(FLOWS / "image_serve", flow)  # flow test writes output images into the flow
    host = _image_host()
    try:
        url = f"{host.url}/red.png"
        done = flowport(
            "flow", "test", "--flow", str(flow), "--inputs", f"image={url}",
            home=home, env={ALLOW_PRIVATE_ENV: "1"},
        )  # fmt: skip
    finally:
        host.stop()
    assert done.returncode == 0, done.stderr
    outputs = json.loads(done.stdout)
    assert outputs["image"] == {"data:image/png;url": url}  # pf writes no file for a URL image
    assert outputs["answer"] == f"Echo: What is this? [image {url}]"


async def test_a_single_node_gets_its_image_inputs_as_images(openai_connection: ConnectionService) -> None:
    executor = FlowExecutor.load(FLOWS / "image_flow", connections=ConnectionResolver(openai_connection))
    try:
        given = {"image": "red.png", "gallery": [{"data:image/png;path": "blue.png"}], "meta": {"n": 1}}
        seen = await executor.run_single_node("inspect", given)
    finally:
        executor.close()
    assert (seen["image"]["class"], seen["image"]["size"]) == ("Image", len(RED))
    assert seen["gallery"][0]["mime"] == "image/png" and seen["meta"] == {"n": 1}


def test_flow_code_imports_prompt_flows_image_type() -> None:
    code = (
        "from promptflow.contracts.multimedia import Image, PFBytes\n"
        "from promptflow.tools.common import build_messages, preprocess_template_string, "
        "find_referenced_image_set\n"
        f"img = Image({RED!r})\n"
        "assert isinstance(img, PFBytes) and isinstance(img, bytes) and img._mime_type == 'image/png'\n"
        "prompt = preprocess_template_string('# user:\\nsee ![image]({{pic}})')\n"
        "print(build_messages(prompt, images=list(find_referenced_image_set({'pic': img})), pic=img))\n"
    )
    env = {"PYTHONPATH": SHIM_ROOT, "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr
    data_uri = "data:image/png;base64," + base64.b64encode(RED).decode()
    parts = [
        {"type": "text", "text": "see "},
        {"type": "image_url", "image_url": {"url": data_uri, "detail": "auto"}},
    ]
    assert done.stdout.strip() == str([{"role": "user", "content": parts}])


def test_flow_code_calls_the_vision_tools(llm_server: LLMServer) -> None:
    code = (
        "from promptflow.connections import AzureOpenAIConnection, OpenAIConnection\n"
        "from promptflow.contracts.multimedia import Image\n"
        "from promptflow.tools.aoai_gpt4v import AzureOpenAI\n"
        "from promptflow.tools.openai_gpt4v import OpenAI\n"
        f"img = Image({RED!r})\n"
        "prompt = '# user:\\nLook ![image]({{pic}})'\n"
        f"openai = OpenAIConnection(name='o', api_key='k', base_url={llm_server.base_url!r})\n"
        "print(OpenAI(openai).chat(prompt=prompt, model='m', pic=img))\n"
        f"azure = AzureOpenAIConnection(name='a', api_key='k', api_base={llm_server.url!r}, "
        "api_version='v')\n"
        "print(''.join(AzureOpenAI(azure).chat(prompt=prompt, deployment_name='d', stream=True, pic=img)))\n"
    )
    env = {"PYTHONPATH": SHIM_ROOT, "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr
    seen = f"Echo: Look  [image image/png {len(RED)} bytes]"
    assert done.stdout.splitlines() == [seen, seen]


@pytest.mark.parametrize(
    ("head", "mime"),
    [
        (RED[:16], "image/png"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "image/jpeg"),
        (b"GIF89a\x01\x00", "image/gif"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp"),
        (b"BM\x00\x00", "image/bmp"),
        (b"not an image", None),
    ],
)
def test_an_images_type_is_guessed_from_its_bytes(head: bytes, mime: str | None) -> None:
    assert guess_image_mime(head) == mime
    assert Image(head)._mime_type == (mime or "image/*")


def test_a_served_flow_reads_image_files_only_from_its_folder(
    openai_connection: ConnectionService, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.png"
    secret.write_bytes(RED)
    executor = FlowExecutor.load(FLOWS / "image_serve", connections=ConnectionResolver(openai_connection))
    server = ThreadedServer(ScoringApp(executor, ServeSettings.from_env({})), lifespan="on").start()
    try:
        for image in (str(secret), "../image_flow/red.png", {"data:image/png;path": str(secret)}):
            answer = httpx.post(f"{server.url}/score", json={"image": image}, timeout=30)
            assert answer.status_code == 400, answer.text
            assert "is outside the flow folder" in answer.json()["error"]["message"]
        inside = httpx.post(f"{server.url}/score", json={"image": "red.png"}, timeout=30)
        assert inside.status_code == 200, inside.text
        assert inside.json()["image"] == {"data:image/png;base64": base64.b64encode(RED).decode()}
    finally:
        server.stop()
        executor.close()


def test_a_served_prompty_reads_image_files_only_from_its_folder(
    openai_connection: ConnectionService, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.png"
    secret.write_bytes(RED)
    executor = load_executor(FLOWS / "prompty_image", connections=ConnectionResolver(openai_connection))
    server = ThreadedServer(ScoringApp(executor, ServeSettings.from_env({})), lifespan="on").start()
    try:
        for path in (str(secret), "../image_flow/red.png"):
            answer = httpx.post(
                f"{server.url}/score", json={"picture": f"data:image/png;path: {path}"}, timeout=30
            )
            assert answer.status_code == 400, answer.text
            assert "is outside the flow folder" in answer.json()["error"]["message"]
        inside_path = {"picture": "data:image/png;path: red.png"}
        inside = httpx.post(f"{server.url}/score", json=inside_path, timeout=30)
        assert inside.status_code == 200, inside.text
    finally:
        server.stop()
        executor.close()


def test_an_image_url_whose_name_rebinds_to_a_private_address_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """DNS rebinding: the name answers a public address to the guard, then loopback to the fetch.
    No DNS server here can do that, so ``getaddrinfo`` answers as one would."""
    import socket

    host = _image_host()
    port = int(host.url.rsplit(":", 1)[1])
    real = socket.getaddrinfo
    answers = iter(["93.184.216.34"])  # public the first time, loopback after

    def rebinding(name: Any, *args: Any, **kwargs: Any) -> Any:
        if name != "rebind.test":
            return real(name, *args, **kwargs)
        address = next(answers, "127.0.0.1")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    try:
        with pytest.raises(InvalidImageInput, match="Failed to fetch image from URL"):
            fetch_image(f"http://rebind.test:{port}/red.png")
    finally:
        host.stop()
