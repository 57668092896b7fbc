"""Run the README's five-minute tour end to end, as a reader would, in a temporary folder.

    python -m bench.docs_tour            # or: make docs-check
    python -m bench.docs_tour --keep tour/  # keep the folder (model, predictions, profile)

The commands are read from the ```bash blocks of README.md's "Five-minute tour" section, so
what runs is what the README says: `make train` runs the real Makefile target (with this
checkout's .venv), `article-classifier serve` is started in the background on a free port
(the `curl` commands are pointed at it and must get a 2xx answer), and every other command
runs in bash as written. `story.html`, the page the tour predicts, is made from a real
article: the first climate article of the narrative-frames set ($ARTICLE_DATA_DIR, else
../shared/data), as its outlet's page. Then the results are checked: the prediction has
its evidence passages, the service answered, the crawl was profiled. Prints each
command's wall time and the total; exits non-zero on the first failure.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECTION = "## Five-minute tour"


def tour_commands(readme: Path = ROOT / "README.md") -> list[str]:
    """The shell commands of the tour section's ```bash blocks, continuation lines joined
    and comments dropped."""
    text = readme.read_text(encoding="utf-8")
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    section = text[start:end if end > 0 else len(text)]
    return [command for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S)
            for command, _ in shell_commands(block)]


def strip_comment(line: str) -> str:
    """The line without its trailing `# ...` comment (a # inside quotes is kept)."""
    cut = line.find("#")
    while cut >= 0:
        if (cut == 0 or line[cut - 1].isspace()) and balanced(line[:cut]):
            return line[:cut]
        cut = line.find("#", cut + 1)
    return line


def shell_commands(block: str) -> list[tuple[str, str]]:
    """(command, its comment) for each command of a shell block; `\\` continuations are
    joined and a `$ ` prompt is dropped."""
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        command = strip_comment(line).strip().removeprefix("$ ")
        if command:
            commands.append((command, line[len(strip_comment(line)):].strip()))
    return commands


def balanced(text: str) -> bool:
    try:
        shlex.split(text)
        return True
    except ValueError:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def data_dir() -> Path:
    return Path(os.environ.get("ARTICLE_DATA_DIR") or ROOT.parent / "shared" / "data")


def write_story(folder: Path) -> None:
    """story.html: a real news article (the first narrative-frames climate article) as its
    outlet's page."""
    from bench.cleaning import as_page, furniture
    from bench.demo_warc import articles

    rows = articles(data_dir())
    row = rows[0]
    titles = [r["text"][:90].rsplit(" ", 1)[0] for r in rows[1:15]]
    page = as_page(row["text"][:90].rsplit(" ", 1)[0], row["text"], furniture(titles), 0)
    (folder / "story.html").write_text(page, encoding="utf-8")


def wait_for(url: str, seconds: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the service exited with {proc.returncode} before answering")
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"no answer from {url} within {seconds:.0f} s")


def run_tour(folder: Path, commands: list[str]) -> list[tuple[str, float]]:
    venv = ROOT / ".venv"
    env = dict(os.environ, PATH=f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
               ARTICLE_DATA_DIR=str(data_dir()), PYTHONUNBUFFERED="1",
               PYTHONPATH=str(ROOT))  # this checkout's code, however the package is installed
    (folder / "configs").symlink_to(ROOT / "configs")
    write_story(folder)
    port = free_port()
    service = None
    timings = []
    try:
        for command in commands:
            shown = command
            if command.startswith("make "):  # the real Makefile, with this checkout's .venv
                command = (f"make -f {ROOT / 'Makefile'} VENV={venv} "
                           f"-o {venv / '.installed'} {command[5:]}")
            if command.startswith("curl "):
                command = command.replace("localhost:8000", f"127.0.0.1:{port}")
                command = "curl --fail-with-body " + command[5:]
            print(f"$ {shown}", flush=True)
            began = time.monotonic()
            if command.startswith("article-classifier serve "):
                service = subprocess.Popen(shlex.split(command) + ["--port", str(port)],
                                           cwd=folder, env=env, start_new_session=True)
                wait_for(f"http://127.0.0.1:{port}/health", 600, service)
            else:
                subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=folder,
                               env=env, check=True)
                print(flush=True)
            timings.append((shown, time.monotonic() - began))
            print(f"  ({timings[-1][1]:.1f} s)", flush=True)
        if service is not None:  # the page the tour opens
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as page:
                assert "<html" in page.read().decode().lower(), "GET / is not a web page"
    finally:
        if service is not None:
            os.killpg(service.pid, signal.SIGTERM)
            service.wait(timeout=30)
    return timings


def check_results(folder: Path) -> list[str]:
    """What the tour should have left behind."""
    found = []
    for name in ("runs/bbc_topic/model/config.json", "runs/bbc_topic/metrics.json",
                 "story.jsonl", "demo/climate.warc.gz", "demo/out.jsonl",
                 "demo/profile/profile.md"):
        if not (folder / name).is_file():
            raise AssertionError(f"the tour did not write {name}")
    story = json.loads((folder / "story.jsonl").read_text().splitlines()[0])
    if "error" in story or not story.get("evidence"):
        raise AssertionError(f"story.jsonl has no prediction with evidence: {story}")
    accuracy = json.loads((folder / "runs/bbc_topic/metrics.json").read_text())
    found.append(f"test accuracy {find_accuracy(accuracy)}")
    label = story["topic"]["label"]
    passages = story["evidence"].get("topic", {}).get(label) or [{"text": ""}]
    found.append(f"story.html: topic {story['topic']['label']} ({story['topic']['score']:.3f}), "
                 f"best passage: {passages[0]['text'][:80]!r}")
    crawl = (folder / "demo/out.jsonl").read_text().splitlines()
    errors = sum("error" in json.loads(line) for line in crawl)
    found.append(f"crawl: {len(crawl)} lines, {errors} with errors; profile rows: "
                 f"{len((folder / 'demo/profile/profile.md').read_text().splitlines())}")
    return found


def find_accuracy(metrics: dict):
    for key in ("accuracy", "test_accuracy"):
        if key in metrics:
            return metrics[key]
    for value in metrics.values():
        if isinstance(value, dict) and (hit := find_accuracy(value)) is not None:
            return hit
    return None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="run in this (new or empty) folder and keep it")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    commands = tour_commands()
    began = time.monotonic()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        folder = args.keep.resolve()
    else:
        folder = Path(tempfile.mkdtemp(prefix="docs-tour-"))
    try:
        timings = run_tour(folder, commands)
        found = check_results(folder)
    except (subprocess.CalledProcessError, RuntimeError, AssertionError, OSError) as err:
        print(f"docs tour FAILED after {time.monotonic() - began:.0f} s: {err}",
              file=sys.stderr)
        return 1
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    print(f"\ndocs tour passed: {len(timings)} commands in {time.monotonic() - began:.0f} s")
    for command, seconds in timings:
        print(f"  {seconds:7.1f} s  {command}")
    for line in found:
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
