"""A private Ray head node on loopback for job-submission tests, stopped precisely.

``ray stop`` kills every Ray process of the user on the machine (other test sessions
included), so the node runs as ``ray start --block`` in its own session with its own
RAY_TMPDIR and is stopped by signalling exactly the processes it started.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil

BIN = Path(sys.executable).parent


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports free on 127.0.0.1 right now (held open together so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class HeadNode:
    proc: subprocess.Popen
    tmpdir: Path
    dashboard_url: str
    env: dict[str, str]
    log: Path

    def processes(self) -> list[psutil.Process]:
        """Every live process of this node: the ``ray start`` tree plus anything naming its tmpdir."""
        found: dict[int, psutil.Process] = {}
        try:
            root = psutil.Process(self.proc.pid)
            found[root.pid] = root
            for child in root.children(recursive=True):
                found[child.pid] = child
        except psutil.NoSuchProcess:
            pass
        marker = str(self.tmpdir)
        for p in psutil.process_iter(["cmdline"]):
            try:
                if any(marker in part for part in (p.info["cmdline"] or [])):
                    found[p.pid] = p
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return [p for p in found.values() if _alive(p)]

    def listening(self) -> list[tuple[str, int, str]]:
        """(address, port, process name) of every TCP socket this node's processes listen on."""
        out = []
        for p in self.processes():
            try:
                for c in p.net_connections(kind="tcp"):
                    if c.status == psutil.CONN_LISTEN:
                        out.append((c.laddr.ip, c.laddr.port, p.name()))
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return out

    @property
    def gcs_address(self) -> str:
        port = next(a for a in self.proc.args if str(a).startswith("--port=")).split("=", 1)[1]
        return f"127.0.0.1:{port}"

    def ray(self, *args: str, timeout: float = 120, cwd: Path | None = None) -> subprocess.CompletedProcess:
        """Run the ``ray`` CLI against this node."""
        return subprocess.run([str(BIN / "ray"), *args], env=self.env, cwd=cwd, capture_output=True,
                              text=True, timeout=timeout)

    def stop(self) -> list[int]:
        """SIGKILL every process of the node (a throwaway test node: nothing to shut down gracefully;
        a graceful ``ray start`` teardown took 3.5 s, 14 s with autoscaled fake nodes); returns stragglers."""
        for _ in range(3):  # a process started while we killed (a worker the raylet spawned) is caught next round
            procs = self.processes()
            if not procs:
                break
            for p in procs:
                try:
                    p.kill()
                except psutil.NoSuchProcess:
                    pass
            psutil.wait_procs(procs, timeout=10)
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        return [p.pid for p in self.processes()]


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def start_head(num_cpus: int = 1, timeout: float = 90, extra_args: tuple[str, ...] = (),
               extra_env: dict[str, str] | None = None, tmpdir: Path | None = None,
               gcs_port: int | None = None) -> HeadNode:
    """``ray start --head --block`` on 127.0.0.1 with every port chosen free, token auth off."""
    # Short path: Ray's unix sockets live under it and must stay under ~107 characters.
    tmpdir = tmpdir or Path(tempfile.mkdtemp(prefix="s1rh-", dir="/tmp"))
    gcs, dash, client, agent, agent_grpc, metrics, nm, om, rte = free_ports(9)
    gcs = gcs_port or gcs
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env.update({
        "RAY_TMPDIR": str(tmpdir),
        "RAY_AUTH_MODE": "disabled",  # loopback-only test cluster; real clusters keep token auth
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # node IP = loopback, servers bind to it
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
        # Job entrypoints run `python` through a shell: make it this environment's python.
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        **(extra_env or {}),
    })
    cmd = [
        str(BIN / "ray"), "start", "--head", "--block", "--disable-usage-stats",
        "--node-ip-address=127.0.0.1", f"--port={gcs}", f"--num-cpus={num_cpus}", "--num-gpus=0",
        "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
        f"--ray-client-server-port={client}", f"--dashboard-agent-listen-port={agent}",
        f"--dashboard-agent-grpc-port={agent_grpc}", f"--metrics-export-port={metrics}",
        f"--node-manager-port={nm}", f"--object-manager-port={om}", f"--runtime-env-agent-port={rte}",
        *extra_args,
    ]
    log = tmpdir / "ray-start.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    node = HeadNode(proc, tmpdir, f"http://127.0.0.1:{dash}", env, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            _give_up(node, f"ray start exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{node.dashboard_url}/api/version", timeout=2) as r:
                if json.load(r).get("ray_version"):
                    # The job agent answers a little after the dashboard itself.
                    with urllib.request.urlopen(f"{node.dashboard_url}/api/jobs/", timeout=5):
                        return node
        except OSError:
            pass
        time.sleep(0.5)
    _give_up(node, f"Ray head did not come up in {timeout}s")


def _give_up(node: HeadNode, why: str) -> None:
    tail = node.log.read_text(errors="replace")[-3000:]
    node.stop()
    shutil.rmtree(node.tmpdir, ignore_errors=True)
    raise RuntimeError(f"{why}:\n{tail}")
