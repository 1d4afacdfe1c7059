"""Migration evidence: mirrored traffic recorded side by side and compared (``online-endpoint compare``)."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

import orjson

from flowport.gateway.compare import (
    MAX_PENDING,
    MAX_STORED_BYTES,
    Comparisons,
    Side,
    field_agreement,
    report,
    same_json,
)
from tests.endpoint_harness import FLOWS, Flowport
from tests.studio_harness import screenshot

CALLER_SECRET = "sk-caller-4f1e9a7c2b"
"""A secret a caller put in a request field named like one: never kept."""


REWRITE_SCRIPT = """\
import json
import os


def init():
    global color
    color = os.environ["COLOR"]


def run(raw_data):
    text = json.loads(raw_data)["text"]
    return {"echoed": text.upper() if text.startswith("new") else text, "color": color}
"""
"""The rewrite flow as a scoring script: the target of docs/migrate.md."""


def _migration(fp: Flowport, green: dict[str, Any] | None = None) -> str:
    """Endpoint ``move``: blue (the probe flow) serves, green (its rewrite, a flow unless
    ``green`` says otherwise) mirrors 50% (Azure's most); the endpoint's key."""
    fp.endpoint("move")
    fp.deploy("move", "blue", environment_variables={"COLOR": "teal"})
    spec = green or {"model": {"path": str(FLOWS / "rewrite")}}
    spec = {**spec, "environment_variables": {"COLOR": "teal"}}
    body = fp.ok("POST", "/endpoints/move/deployments", params={"name": "green"}, json={"spec": spec})
    assert fp.wait(body["operation"], timeout=180)["status"] == "Succeeded"
    shares = {"traffic": {"blue": 100}, "mirror_traffic": {"green": 50}}
    done = fp.api("PUT", "/endpoints/move/traffic", json=shares)
    assert done.status_code < 300, done.text
    return fp.key("move")


def _send(fp: Flowport, key: str) -> dict[str, str]:
    """40 requests, half of which green answers differently (upper case); text by request id.

    Every text carries the endpoint's key, and every body a secret in a field named like one.
    """
    texts = {}
    for i in range(40):
        request_id = f"migrate-{i}"
        texts[request_id] = f"{'new' if i % 2 else 'old'}-{i}-{key}"
        body = {"text": texts[request_id], "api_key": CALLER_SECRET}
        answer = fp.score("move", body, key=key, **{"x-request-id": request_id})
        assert answer.status_code == 200, answer.text
        assert answer.json()["echoed"] == texts[request_id]  # the caller always gets blue's answer
    return texts


def _mirrored(fp: Flowport, mirror: str = "green", prefix: str = "migrate-") -> set[str]:
    """The request ids the mirror answered, from its own access log (the mirror is sampled)."""
    lines = fp.ok("GET", f"/endpoints/move/deployments/{mirror}/logs", params={"lines": 5000})["lines"]
    found = set()
    for line in lines:
        with contextlib.suppress(ValueError):
            entry = json.loads(line[line.index("{") :])
            if entry.get("event") == "request" and str(entry.get("request_id", "")).startswith(prefix):
                found.add(entry["request_id"])
    return found


def _compare(fp: Flowport, mirror: str = "green", prefix: str = "migrate-") -> dict[str, Any]:
    """The report once every copy the mirror answered is recorded."""
    deadline = time.monotonic() + 30
    last: tuple[int, int] | None = None
    while True:
        mirrored = _mirrored(fp, mirror, prefix)
        found = fp.ok("GET", "/endpoints/move/compare", params={"deployments": ["blue", "green"]})
        counts = (len(mirrored), found["pairs"])
        # the access log and the pairs both lag the answers a little: settled when twice the same
        if (mirrored and counts == last and counts[0] == counts[1]) or time.monotonic() > deadline:
            return {**found, "mirrored": mirrored}
        last = counts
        time.sleep(0.3)


def test_compare_reports_agreement_latency_and_the_differing_pairs(home: Path) -> None:
    with Flowport(home) as fp:
        key = _migration(fp)
        assert (
            fp.ok("GET", "/endpoints/move/compare", params={"deployments": ["blue", "green"]})["pairs"] == 0
        )
        texts = _send(fp, key)
        found = _compare(fp)
        mirrored = found.pop("mirrored")
        changed = {rid for rid in mirrored if texts[rid].startswith("new")}
        assert changed and len(changed) < len(mirrored)  # 40 requests: both kinds were mirrored

        pairs = len(mirrored)
        assert found["pairs"] == pairs
        assert found["agreed"] == pairs - len(changed)
        assert found["agreement_rate"] == round((pairs - len(changed)) / pairs, 4)
        assert found["field_agreement"] == {"echoed": found["agreement_rate"], "color": 1.0}
        assert found["differing_count"] == len(changed)
        differing = {pair["request_id"]: pair for pair in found["differing"]}
        assert set(differing) == changed
        request_id = sorted(changed)[0]
        one = differing[request_id]
        assert one["fields"] == ["echoed"]
        masked = texts[request_id].replace(key, "******")
        assert one["request"] == {"text": masked, "api_key": "******"}
        assert one["blue"]["answer"] == {"echoed": masked, "color": "teal"}
        shouted = texts[request_id].upper().replace(key.upper(), "******")  # masked in any case
        assert one["green"]["answer"] == {"echoed": shouted, "color": "teal"}
        for side in ("blue", "green"):
            assert one[side]["status"] == 200
            assert found["latency_ms"][side]["p50"] > 0
            assert found["latency_ms"][side]["p95"] >= found["latency_ms"][side]["p50"]
        assert found["tokens"] is None  # the flows call no LLM

        # neither the endpoint's key nor the caller's secret field is ever kept
        kept = json.dumps(found)
        assert key not in kept and key.upper() not in kept and CALLER_SECRET not in kept

        # the reverse order reads the same pairs from green's side
        reverse = fp.ok("GET", "/endpoints/move/compare", params={"deployments": ["green", "blue"]})
        assert reverse["agreed"] == found["agreed"]
        assert reverse["differing"][0]["green"]["answer"]["echoed"].startswith("NEW-")

        metrics = fp.http.get(f"{fp.url}/metrics", headers={"authorization": f"Bearer {fp.token}"}).text
        assert f"flowport_gateway_compare_pairs_total {float(pairs)}" in metrics

        # the CLI: the summary, and -o json
        summary = fp.cli("online-endpoint", "compare", "-n", "move", "--deployments", "blue", "green").stdout
        rate = f"{found['agreement_rate']:.1%}"
        assert f"agreement: {rate} exact ({found['agreed']} of {pairs})" in summary
        assert f"- {request_id} fields: echoed" in summary
        assert key not in summary
        as_json = fp.cli(
            "online-endpoint", "compare", "-n", "move", "--deployments", "blue", "green", "-o", "json"
        )
        assert json.loads(as_json.stdout)["agreed"] == found["agreed"]

        # bad input: one clear line each
        same = fp.cli(
            "online-endpoint", "compare", "-n", "move", "--deployments", "blue", "blue", check=False
        )
        assert same.returncode != 0 and "two different deployments" in same.stderr
        assert "Traceback" not in same.stderr
        unknown = fp.cli(
            "online-endpoint", "compare", "-n", "move", "--deployments", "blue", "gren", check=False
        )
        assert unknown.returncode != 0 and "no deployment 'gren'" in unknown.stderr
        neither = fp.cli("online-endpoint", "compare", "-n", "move", check=False)
        assert neither.returncode != 0 and "--deployments blue green (or --clear)" in neither.stderr
        nowhere = fp.api("GET", "/endpoints/nowhere/compare", params={"deployments": ["a", "b"]})
        assert nowhere.status_code == 404

        # traffic moves to green, blue becomes the mirror; the pairs so far are forgotten
        fp.cli(
            "online-endpoint",
            "update",
            "-n",
            "move",
            "--traffic",
            "blue=0 green=100",
            "--mirror-traffic",
            "blue=50",
        )
        cleared = fp.cli("online-endpoint", "compare", "-n", "move", "--clear").stdout
        assert "forgot the recorded pairs of move" in cleared
        for i in range(20):
            body = {"text": f"new-{i}"}
            answer = fp.score("move", body, key=key, **{"x-request-id": f"shift-{i}"})
            assert answer.json()["echoed"] == f"NEW-{i}"  # green answers now
        after = _compare(fp, "blue", "shift-")
        assert after["pairs"] == len(after["mirrored"]) > 0
        assert after["agreed"] == 0
        assert {p["request_id"] for p in after["differing"]} == after["mirrored"]


def test_a_scoring_script_green_is_compared_with_the_flow_blue(home: Path, tmp_path: Path) -> None:
    code = tmp_path / "green"
    code.mkdir()
    (code / "score.py").write_text(REWRITE_SCRIPT)
    with Flowport(home) as fp:
        key = _migration(fp, {"code_configuration": {"code": str(code), "scoring_script": "score.py"}})
        texts = _send(fp, key)
        found = _compare(fp)
        mirrored = found.pop("mirrored")
        changed = {rid for rid in mirrored if texts[rid].startswith("new")}
        assert found["pairs"] == len(mirrored) > 0
        assert found["agreed"] == len(mirrored) - len(changed)
        assert {pair["request_id"] for pair in found["differing"]} == changed
        assert found["field_agreement"]["color"] == 1.0
        assert key not in json.dumps(found) and CALLER_SECRET not in json.dumps(found)


def _side(name: str, answer: Any) -> Side:
    return Side(name, 200, 5.0, orjson.dumps(answer))


def test_the_ring_keeps_the_newest_pairs_within_its_count_and_bytes() -> None:
    comparisons = Comparisons(max_pairs=5, max_bytes=10**9)
    for i in range(20):
        ticket = comparisons.expect("ep", "blue", ["green"], f"r{i}", b'{"i": %d}' % i, ())
        comparisons.answered(ticket, _side("blue", {"i": i}))
        comparisons.answered(ticket, _side("green", {"i": i if i % 2 else -i}))
    assert comparisons.flush()
    kept = comparisons.pairs("ep")
    assert [pair["request_id"] for pair in kept] == [f"r{i}" for i in range(15, 20)]
    assert report("ep", kept, "blue", "green")["agreed"] == 3  # 15, 17, 19

    small = Comparisons(max_pairs=1000, max_bytes=50_000)
    big = {"text": "x" * (MAX_STORED_BYTES * 2)}
    for i in range(20):
        ticket = small.expect("ep", "blue", ["green"], f"r{i}", orjson.dumps(big), ("x" * 3,))
        small.answered(ticket, _side("blue", big))
        small.answered(ticket, _side("green", big))
    assert small.flush()
    stored = small.pairs("ep")
    assert 0 < len(stored) < 20 and small.stored_bytes("ep") <= 50_000
    assert stored[-1]["request_id"] == "r19"
    assert stored[-1]["primary"]["truncated"] and len(stored[-1]["primary"]["answer"]) <= MAX_STORED_BYTES
    assert stored[-1]["agree"] is True  # compared whole, cut only to be kept
    ticket = small.expect("ep", "blue", ["green"], "over", b"{}", ())
    small.answered(ticket, Side("blue", 200, 1.0, b'{"a": 1}', truncated=True))  # over 1 MiB
    small.answered(ticket, _side("green", {"a": 1}))
    assert small.flush()
    assert small.pairs("ep")[-1]["agree"] is False  # an answer not captured whole never agrees
    small.close()
    comparisons.close()


def test_a_pair_waits_for_every_side_and_a_dropped_copy_is_not_waited_for() -> None:
    comparisons = Comparisons()
    ticket = comparisons.expect("ep", "blue", ["green", "gold"], "r1", b"{}", ())
    comparisons.answered(ticket, _side("blue", {"a": 1}))
    comparisons.answered(ticket, _side("green", {"a": 1}))
    assert comparisons.flush() and comparisons.pairs("ep") == []
    comparisons.answered(ticket, Side("gold", 0, 0.0, b""))  # the copy to gold was dropped
    assert comparisons.flush()
    assert [p["mirror"]["deployment"] for p in comparisons.pairs("ep")] == ["green"]
    comparisons.close()


def test_the_studio_compare_tab_shows_the_report(studio: tuple[Flowport, object]) -> None:
    server, page = studio
    key = _migration(server)
    texts = _send(server, key)
    found = _compare(server)
    changed = sorted(rid for rid in found["mirrored"] if texts[rid].startswith("new"))
    page.goto(f"{server.url}/studio/endpoints/move#compare")  # type: ignore[attr-defined]
    panel = page.locator("#panel-compare")  # type: ignore[attr-defined]
    rate = f"{found['agreement_rate'] * 100:.1f}%"
    panel.locator("#compare-agreement").filter(has_text=rate).wait_for()
    assert panel.locator("#compare-a").input_value() == "blue"
    assert panel.locator("#compare-b").input_value() == "green"
    fields = panel.locator("#compare-fields").inner_text()
    assert "echoed" in fields and "100.0%" in fields
    assert panel.locator("#compare-differing > li").count() == len(changed)
    text = panel.inner_text()
    assert changed[0] in text and texts[changed[0]].upper().replace(key.upper(), "******") in text
    assert key not in text and CALLER_SECRET not in text
    screenshot(page, "endpoint-compare")


def test_pairs_that_cannot_wait_are_dropped_and_counted() -> None:
    drops: list[str] = []
    recorded: list[int] = []
    comparisons = Comparisons(on_drop=drops.append, on_recorded=lambda: recorded.append(1), queue_size=1)
    for i in range(MAX_PENDING + 1):  # the mirror never answers: the oldest waiting one goes
        comparisons.expect("ep", "blue", ["green"], f"w{i}", b"{}", ())
    assert drops == ["pending_full"]
    comparisons.close()

    drops.clear()
    comparisons = Comparisons(on_drop=drops.append, on_recorded=lambda: recorded.append(1), queue_size=1)
    with comparisons._rings_lock:  # the thread is stuck keeping the first pair: the queue fills up
        for i in range(5):
            ticket = comparisons.expect("ep", "blue", ["green"], f"r{i}", b"{}", ())
            comparisons.answered(ticket, _side("blue", {"i": i}))
            comparisons.answered(ticket, _side("green", {"i": i}))
        assert drops and set(drops) == {"queue_full"}
    assert comparisons.flush()
    assert len(recorded) + len(drops) == 5
    assert len(comparisons.pairs("ep")) == len(recorded)
    comparisons.close()


def test_token_deltas_come_from_the_answers_usage_and_streams_compare_by_events() -> None:
    comparisons = Comparisons()
    for i, (mine, theirs) in enumerate([(30, 20), (50, 40)]):
        ticket = comparisons.expect("ep", "blue", ["green"], f"t{i}", b"{}", ())
        comparisons.answered(ticket, _side("blue", {"answer": "a", "usage": {"total_tokens": mine}}))
        comparisons.answered(ticket, _side("green", {"answer": "a", "usage": {"total_tokens": theirs}}))
    stream = (
        b'data: {"delta": "he"}\n\ndata: {"delta": "llo", "usage": {"total_tokens": 7}}\n\ndata: [DONE]\n\n'
    )
    ticket = comparisons.expect("ep", "blue", ["green"], "s", b"{}", ())
    comparisons.answered(ticket, Side("blue", 200, 3.0, stream, events=True))
    comparisons.answered(ticket, Side("green", 200, 4.0, stream, events=True))
    assert comparisons.flush()
    found = report("ep", comparisons.pairs("ep"), "blue", "green")
    assert found["tokens"] == {
        "pairs": 3,
        "blue": {"total": 87, "mean": 29.0},
        "green": {"total": 67, "mean": 22.333},
        "delta": {"total": -20, "mean": -6.667},
    }
    assert found["field_agreement"] == {"answer": 1.0, "usage": 0.0}
    assert found["agreed"] == 1  # the two identical streams
    assert comparisons.pairs("ep")[-1]["primary"]["answer"][1]["delta"] == "llo"
    comparisons.close()


def test_answers_agree_only_when_equal_as_json() -> None:
    """Python's ``==`` takes ``true`` for ``1`` and ``1`` for ``1.0``; a JSON answer does not."""
    assert same_json({"a": [1, "x", None], "b": {"c": True}}, {"b": {"c": True}, "a": [1, "x", None]})
    assert not same_json({"ok": True}, {"ok": 1})
    assert not same_json([1], [1.0])
    assert not same_json({"a": 1}, {"a": 1, "b": 2})
    assert field_agreement({"ok": True, "n": 2}, {"ok": 1, "n": 2}) == {"ok": False, "n": True}
