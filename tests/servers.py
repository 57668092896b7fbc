"""The prediction service in a child process, as a user starts it, for the tests and the
screenshot tool (bench/screenshots.py): a free port, start once /health answers, stop."""

from __future__ import annotations

import http.client
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def healthy(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/health")
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except OSError:
        return False


def start_service(model: Path, port: int, log: Path, *args: str,
                  timeout: float = 180) -> subprocess.Popen:
    """`article-classifier serve MODEL` on `port`, once /health answers 200."""
    handle = open(log, "wb")  # a file, not a pipe: an unread pipe fills and blocks
    proc = subprocess.Popen([sys.executable, "-m", "model.cli", "serve", str(model),
                             "--port", str(port), *args], cwd=ROOT, stdout=handle,
                            stderr=subprocess.STDOUT)
    handle.close()
    deadline = time.time() + timeout
    while time.time() < deadline:
        if healthy(port):
            return proc
        if proc.poll() is not None:
            break
        time.sleep(0.3)
    proc.kill()
    proc.wait()
    raise RuntimeError(f"the service did not start:\n{log.read_text()[-2000:]}")


def stop_service(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
