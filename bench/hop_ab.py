"""The gateway hop's CPU per request, two source trees in the same run (A/B).

Two ``flowport server`` processes, each with one scoring-script deployment (bench/scoring.py's
``score.py``, ``instance_count: 1``, its limits), run the flowport source trees given as A and B
(``PYTHONPATH``, passed on to the instances with ``FLOWPORT_INSTANCE_PASS_ENV``). The same load
(``bench/_common.LoadPool``, ``--connections`` connections from ``--client-processes`` processes)
goes to each in turn, ``--rounds`` rounds of ``--seconds`` (the order alternating), and each
round reads from /proc the CPU of the data plane process alone (gateway, key check, relay) and
of the instance: milliseconds per answered request, steadier than req/s on a shared machine.
``FLOWPORT_TRACING`` is ``off`` unless ``--tracing`` says otherwise.

    git archive HEAD~3 src | tar -x -C /tmp/before     # a tree to compare against
    .venv/bin/python bench/hop_ab.py /tmp/before/src src
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from _common import FlowportServer, LoadPool, Target, descendants
from scoring import FLOWPORT, SCORE_PY, checked_target, deploy_script


def own_cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of one process (not its children)."""
    fields = Path("/proc", str(pid), "stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def command_line(pid: int) -> str:
    try:
        return Path("/proc", str(pid), "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def deployment(
    stack: contextlib.ExitStack, scratch: Path, name: str, src: str, tracing: str
) -> tuple[Target, int, int]:
    """A server running ``src`` with the deployment: its target, data plane pid and instance pid."""
    env = {"FLOWPORT_TRACING": tracing, "PYTHONPATH": src, "FLOWPORT_INSTANCE_PASS_ENV": "PYTHONPATH"}
    fp = stack.enter_context(FlowportServer(scratch / f"home-{name}", FLOWPORT, env))
    deploy_script(fp, scratch)
    headers = {"Authorization": f"Bearer {fp.key('bench-script')}"}
    target = checked_target(name, fp.port, "/endpoints/bench-script/score", headers)
    assert fp.process is not None
    server = fp.process.pid
    instances = [pid for pid in descendants(server) if "flowport.runtime.instance" in command_line(pid)]
    if len(instances) != 1:
        raise RuntimeError(f"{name}: expected one instance process, found {instances}")
    return target, server, instances[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("a", help="source tree A (the folder holding flowport/)")
    parser.add_argument("b", help="source tree B")
    parser.add_argument("--rounds", type=int, default=6, help="rounds, each measuring A and B (6)")
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds of load per way and round (4)")
    parser.add_argument("--connections", type=int, default=32, help="connections (32)")
    parser.add_argument("--client-processes", type=int, default=2, help="load processes (2)")
    parser.add_argument("--tracing", default="off", help="FLOWPORT_TRACING of both servers (off)")
    args = parser.parse_args(argv)

    scratch = Path(tempfile.mkdtemp(prefix="flowport-hop-ab-"))
    (scratch / "code").mkdir()
    (scratch / "code" / "score.py").write_text(SCORE_PY)
    sources = {"A": str(Path(args.a).resolve()), "B": str(Path(args.b).resolve())}
    figures: dict[str, dict[str, list[float]]] = {
        k: {"gateway": [], "instance": [], "rate": []} for k in sources
    }
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, scratch, True)
        ways = {k: deployment(stack, scratch, k, src, args.tracing) for k, src in sources.items()}
        pools = {
            k: stack.enter_context(LoadPool(target, args.connections, args.client_processes))
            for k, (target, _, _) in ways.items()
        }
        for pool in pools.values():
            pool.run(1.0)  # warm-up
        for round_ in range(args.rounds):
            for k in ("A", "B") if round_ % 2 == 0 else ("B", "A"):
                _, server, instance = ways[k]
                before = own_cpu_seconds(server), own_cpu_seconds(instance)
                record = pools[k].run(args.seconds)
                after = own_cpu_seconds(server), own_cpu_seconds(instance)
                ok = max(record.ok, 1)
                figures[k]["gateway"].append((after[0] - before[0]) / ok * 1000)
                figures[k]["instance"].append((after[1] - before[1]) / ok * 1000)
                figures[k]["rate"].append(record.rate)
                print(
                    f"round {round_ + 1} {k}: {record.rate:8,.0f} req/s  {record.failed} failed  CPU ms/req:"
                    f" data plane {figures[k]['gateway'][-1]:.4f}  instance {figures[k]['instance'][-1]:.4f}",
                    file=sys.stderr,
                    flush=True,
                )
    print("way  source                                    data plane  instance   total  req/s (median)")
    for k, values in figures.items():
        gateway, instance = statistics.mean(values["gateway"]), statistics.mean(values["instance"])
        print(
            f"{k:4} {sources[k][-40:]:40}  {gateway:10.4f}  {instance:8.4f}  {gateway + instance:6.4f}"
            f"  {statistics.median(values['rate']):,.0f}"
        )
    print("CPU: milliseconds per answered request, mean over the rounds, per process")
    return 0


if __name__ == "__main__":
    sys.exit(main())
