"""More machines through xdist's gateways: a socket gateway on loopback stands in for another host."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def socket_host(tmp_path: Path):
    """execnet's socket server, as a remote host would run it: ``python -m execnet.script.socketserver HOST:PORT``."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "execnet.script.socketserver", f"127.0.0.1:{port}"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket() as client:
            if client.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.kill()
        server.wait(timeout=10)


def responses(path: Path) -> dict[tuple[str, str, int], str]:
    return {(c["key"], c["config"], c["trial"]): c["response"] for c in json.loads(path.read_text())["cases"]}


def test_a_socket_gateway_gives_the_responses_of_a_serial_run(
    pytester: pytest.Pytester, tiny_checkpoint: Path, tmp_path: Path, socket_host: str
) -> None:
    # Paths as --option=value: xdist rewrites every argument that is an existing path relative to the rsync roots.
    args = ["-p", "no:cacheprovider", f"--steer-model={tiny_checkpoint}", "--steer-limit", "3", "--steer-alpha", "10"]
    # float32: bfloat16's rounding differs with the matmul kernels a thread count picks (the remote worker's and the serial run's)
    args += ["--steer-max-new-tokens", "4", "--steer-no-cache", f"--rootdir={REPO}", "--steer-dtype", "float32"]
    suites = str(REPO / "suites")
    serial = pytester.runpytest_subprocess(suites, *args, f"--steer-json={tmp_path / 'serial.json'}")
    assert serial.ret == 0, serial.stdout.str()
    remote = pytester.runpytest_subprocess(
        suites,
        *args,
        "-d",
        "--tx",
        f"socket={socket_host}",
        "--rsyncdir",
        suites,
        f"--steer-json={tmp_path / 'remote.json'}",
    )
    assert remote.ret == 0, remote.stdout.str()
    remote.stdout.fnmatch_lines(["*workers: gw0 ran 6 cases*"])
    assert responses(tmp_path / "remote.json") == responses(tmp_path / "serial.json")


def test_shard_jobs_and_a_merge_give_the_unsharded_run(pytester: pytest.Pytester, tiny_checkpoint: Path, tmp_path: Path) -> None:
    """docs/scaling.md's loop: one run per shard, then ``python -m pytest_steer merge``."""
    from pytest_steer.__main__ import main

    args = ["-p", "no:cacheprovider", "--rootdir", str(REPO), "--steer-model", str(tiny_checkpoint), "--steer-limit", "5"]
    # float32: a shard's batches hold other rows than the whole run's, which bfloat16 rounds visibly apart
    args += ["--steer-alpha", "10", "--steer-max-new-tokens", "4", "--steer-no-cache", "--steer-dtype", "float32"]
    suite = str(REPO / "suites" / "ifeval")
    for shard in (1, 2):
        run = pytester.runpytest_subprocess(
            suite, *args, "--steer-shard", f"{shard}/2", "--steer-report-dir", str(tmp_path / f"shard-{shard}")
        )
        assert run.ret == 0, run.stdout.str()
    whole = pytester.runpytest_subprocess(suite, *args, "--steer-report-dir", str(tmp_path / "whole"))
    assert whole.ret == 0, whole.stdout.str()
    fail_if = "alpha=10: strict_prompt_accuracy - baseline < 0"
    assert (
        main(
            [
                "merge",
                str(tmp_path / "merged"),
                str(tmp_path / "shard-1"),
                str(tmp_path / "shard-2"),
                "--fail-if",
                fail_if,
                "--min-prompts",
                "2",
            ]
        )
        == 0
    )
    merged, unsharded = (json.loads((tmp_path / name / "results.json").read_text()) for name in ("merged", "whole"))
    # The same responses; the baseline's fluency is read off its generation's logits, whose float rounding
    # follows the padding of the batch it ran in, and shards batch the prompts differently.
    for ours, whole_run in zip(merged["configs"], unsharded["configs"]):
        assert ours["metrics"].keys() == whole_run["metrics"].keys()
        for metric, interval in whole_run["metrics"].items():
            assert ours["metrics"][metric] == pytest.approx(interval, rel=1e-6), (ours["name"], metric)
    assert merged["gates"][0]["gate"].endswith(fail_if) and merged["gates"][0]["passed"]
