"""Run every shell command of README.md and docs/*.md, as a reader would, in a temporary folder.

    python -m bench.docs_commands               # or: make docs-check
    python -m bench.docs_commands --list        # what runs, what does not and why; runs nothing
    python -m bench.docs_commands --all         # also the commands marked `not run: takes about`
    python -m bench.docs_commands --keep DIR    # run in DIR (new or empty) and keep it
    python -m bench.docs_commands --reuse RUNS  # copy RUNS/<job>/, skip the trainings of them

The commands are read from the ```bash blocks (continuations joined, comments dropped), so
what runs is what the docs say. A command whose comment says `not run: REASON` is not run:
`not run: takes about N minutes` ones run with --all, the others (a GPU, a cluster, the
network) never; tests/test_docs.py checks that every command is run here or says why not.

The folder links to this checkout's Makefile, pyproject.toml, configs/, .venv and code
(bench/ file by file, so bench/results/ is the folder's own): `make train`, `.
.venv/bin/activate` and `python -m bench.X` work there as in the checkout. .venv/bin is
taken off PATH: the README's own `. .venv/bin/activate` line is what puts it back, and
every later command runs after it, as in the reader's shell. Order: the README as written;
then every training (`make train`, `python -m train`), so that the models the pages use
exist; then each page's commands in PAGES order. A command already run is not run again.

Substitutions, where the docs use placeholders or fixed places:
  MODEL             -> runs/news_topic_frames/model (topic and frames, so that every
                       option applies; trained by crawls.md's command)
  articles.jsonl, in.jsonl, articles.csv (column `body`), folder_of_txt/, corpus_shards/,
  corpus/           -> written here: the first 80 narrative-frames climate articles
  story.html        -> one of them as its outlet's page; crawl.warc.gz -> the demo crawl
  ../shared/data    -> $ARTICLE_DATA_DIR (else ../shared/data beside this checkout)
  --predictions / --profile predictions.jsonl -> demo/out.jsonl (crawls.md's frames
                       predictions of the demo crawl, with sources)
  localhost:8000, --port 8000 -> a free port; `serve` runs in the background until the
                       next `serve` or the page's end; `curl` gets --fail-with-body
  make X            -> make -o .venv/.installed X (the checkout's venv counts as installed)
  EDITS below: a page's illustrative outputs that would overwrite what its next line reads.
Each command must exit 0 and write what its -o/--output/--out names; the tour's results
(prediction with evidence, service answers, profile) are checked as well.
"""

from __future__ import annotations

import argparse
import csv
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
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECTION = "## Five-minute tour"
PAGES = ["README.md", "docs/training.md", "docs/configs.md", "docs/framing.md",
         "docs/crawls.md", "docs/profiles.md", "docs/inference.md", "docs/evidence.md",
         "docs/service.md", "docs/scale-out.md", "docs/troubleshooting.md",
         "docs/benchmarks.md", "docs/layout.md", "docs/artifact.md"]
ACTIVATE = ". .venv/bin/activate"
LINKED = ["Makefile", "pyproject.toml", "configs", ".venv", "model", "train", "tests"]
SUBSTITUTIONS = [
    (r"(?<![\w/=])MODEL\b", "runs/news_topic_frames/model"),
    (r"(?<![\w/.])crawl\.warc\.gz", "demo/climate.warc.gz"),
    (r"--(predictions|profile) predictions\.jsonl", r"--\1 demo/out.jsonl"),
]
EDITS = {  # (page, command) -> (old, new): an illustration's output renamed, and why
    ("docs/crawls.md", "article-classifier predict MODEL story.html -o out.jsonl --keep title "
     "--keep date"): ("-o out.jsonl", "-o story-out.jsonl"),  # line 8 profiles line 6's crawl
}
INPUTS = 80


@dataclass
class Command:
    page: str
    line: int
    text: str
    comment: str

    @property
    def not_run(self) -> str | None:
        found = re.search(r"not run: (.+)$", self.comment)
        return found.group(1).strip() if found else None

    long = property(lambda self: (self.not_run or "").startswith("takes about"))
    training = property(lambda self: bool(re.match(r"(make train\b|python -m train )",
                                                   self.text)) and "--resume" not in self.text)


def strip_comment(line: str) -> str:
    """The line without its trailing `# ...` comment (a # inside quotes is kept)."""
    cut = line.find("#")
    while cut >= 0:
        if (cut == 0 or line[cut - 1].isspace()) and balanced(line[:cut]):
            return line[:cut]
        cut = line.find("#", cut + 1)
    return line


def balanced(text: str) -> bool:
    try:
        return shlex.split(text) is not None
    except ValueError:
        return False


def shell_lines(block: str) -> list[tuple[int, str, str]]:
    """(line offset, command, its comment) for each command of a shell block; `\\`
    continuations are joined and a `$ ` prompt is dropped."""
    found, offset, pending = [], 0, None
    for i, line in enumerate(block.splitlines()):
        if pending is None:
            pending, offset = "", i
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        whole, pending = pending + line, None
        command = strip_comment(whole).strip().removeprefix("$ ")
        if command:
            found.append((offset, re.sub(r"\s+", " ", command), whole[len(strip_comment(whole)):]
                          .strip()))
    return found


def shell_commands(block: str) -> list[tuple[str, str]]:
    return [(command, comment) for _, command, comment in shell_lines(block)]


def page_commands(page: str) -> list[Command]:
    text = (ROOT / page).read_text(encoding="utf-8")
    found = []
    for match in re.finditer(r"^```(bash|sh|console)\n(.*?)^```", text, flags=re.S | re.M):
        first = text[:match.start()].count("\n") + 2
        found += [Command(page, first + offset, command, comment)
                  for offset, command, comment in shell_lines(match.group(2))]
    return found


def all_commands() -> list[Command]:
    pages = PAGES + sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")
                           if f"docs/{p.name}" not in PAGES)
    return [command for page in pages for command in page_commands(page)]


def tour_commands(readme: Path = ROOT / "README.md") -> list[str]:
    text = readme.read_text(encoding="utf-8")
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    section = text[start:end if end > 0 else len(text)]
    return [command for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S)
            for command, _ in shell_commands(block)]


def plan(commands: list[Command], run_long: bool) -> list[Command]:
    """What runs, in order: the README, then the trainings, then each page in order."""
    runnable = [c for c in commands if not c.not_run or (run_long and c.long)]
    readme = [c for c in runnable if c.page == "README.md"]
    trainings = sorted((c for c in runnable if c.page != "README.md" and c.training),
                       key=lambda c: "--set" not in c.text)  # full runs last: they stay
    rest = [c for c in runnable if c.page != "README.md" and not c.training]
    return readme + trainings + rest


def data_dir() -> Path:
    return Path(os.environ.get("ARTICLE_DATA_DIR") or ROOT.parent / "shared" / "data")


def write_inputs(folder: Path) -> None:
    """The placeholder inputs, from real articles (the narrative-frames climate set)."""
    from bench.cleaning import as_page, furniture
    from bench.demo_warc import articles

    first = articles(data_dir())[:INPUTS]
    records = [{"id": str(r["ID"]), "title": r["text"][:90].rsplit(" ", 1)[0],
                "text": r["text"], "source": r["source"]} for r in first]
    jsonl = "".join(json.dumps(r) + "\n" for r in records)
    [(folder / name).write_text(jsonl, encoding="utf-8") for name in ("articles.jsonl", "in.jsonl")]
    with open(folder / "articles.csv", "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["id", "body"])
        writer.writerows([r["id"], r["text"]] for r in records)
    for name, size in (("corpus_shards", 2), ("corpus", 2)):
        (folder / name).mkdir()
        for k in range(size):
            (folder / name / f"part-{k}.jsonl").write_text(
                "".join(json.dumps(r) + "\n" for r in records[k::size]), encoding="utf-8")
    (folder / "folder_of_txt").mkdir()
    for r in records[:5]:
        (folder / "folder_of_txt" / f"{r['id']}.txt").write_text(
            f"{r['title']}\n{r['text']}", encoding="utf-8")
    titles = [r["title"] for r in records[1:15]]
    page = as_page(records[0]["title"], records[0]["text"], furniture(titles), 0)
    (folder / "story.html").write_text(page, encoding="utf-8")


def link_checkout(folder: Path, reuse: Path | None) -> None:
    for name in LINKED:
        (folder / name).symlink_to(ROOT / name)
    (folder / "bench").mkdir()
    for source in (ROOT / "bench").glob("*.py"):
        (folder / "bench" / source.name).symlink_to(source)
    if reuse:
        (folder / "runs").mkdir()
        for run in sorted(reuse.iterdir()):
            if (run / "model" / "config.json").is_file():
                shutil.copytree(run, folder / "runs" / run.name, symlinks=True)


def free_port() -> int:
    with socket.socket() as sock:
        return sock.bind(("127.0.0.1", 0)) or sock.getsockname()[1]


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


def substitute(command: Command, port: int) -> str:
    text = command.text
    if (command.page, text) in EDITS:
        old, new = EDITS[command.page, text]
        text = text.replace(old, new)
    for pattern, replacement in SUBSTITUTIONS:
        text = re.sub(pattern, replacement, text)
    text = text.replace("../shared/data", str(data_dir()))
    text = text.replace("localhost:8000", f"127.0.0.1:{port}").replace(
        "--port 8000", f"--port {port}")
    if "article-classifier serve" in text and "--port" not in text:
        text += f" --port {port}"
    if text.startswith("curl "):
        text = "curl --fail-with-body " + text[5:]
    if text.startswith("make "):
        text = f"make -o .venv/.installed {text[5:]}"
    return text


def outputs(text: str) -> list[str]:
    words = shlex.split(text)
    return [words[i + 1] for i, w in enumerate(words[:-1]) if w in ("-o", "--output", "--out")]


class Runner:
    """Runs commands in `folder` as the reader's shell would, the activate line kept."""

    def __init__(self, folder: Path):
        self.folder, self.activated, self.service, self.page = folder, False, None, None
        self.port = free_port()
        venv_bin = str(ROOT / ".venv" / "bin")
        path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                               if p.rstrip("/") != venv_bin)
        self.env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
        self.env.update(PATH=path, ARTICLE_DATA_DIR=str(data_dir()), PYTHONUNBUFFERED="1")

    def shell(self, text: str) -> list[str]:
        prefix = f"{ACTIVATE} && " if self.activated else ""
        return ["bash", "-o", "pipefail", "-c", prefix + text]

    def run(self, command: Command) -> None:
        if command.page != self.page:
            self.stop()
            self.page = command.page
        text = substitute(command, self.port)
        self.activated = self.activated or text == ACTIVATE
        if " serve " in f" {text} " and text.split()[0] != "python":
            self.stop()
            self.port = free_port()
            text = substitute(command, self.port)
            self.service = subprocess.Popen(self.shell(text), cwd=self.folder,
                                            env=self.env, start_new_session=True)
            wait_for(f"http://127.0.0.1:{self.port}/health", 600, self.service)
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=30) as page:
                assert "<html" in page.read().decode().lower(), "GET / is not a web page"
            return
        subprocess.run(self.shell(text), cwd=self.folder, env=self.env, check=True)
        for name in outputs(text):
            if not (self.folder / name).exists():
                raise AssertionError(f"`{text}` did not write {name}")

    def stop(self) -> None:
        if self.service is not None:
            os.killpg(self.service.pid, signal.SIGTERM)
            self.service, _ = None, self.service.wait(timeout=30)


def check_tour(folder: Path) -> list[str]:
    """What the README's tour should have left behind."""
    for name in ("runs/bbc_topic/model/config.json", "runs/bbc_topic/metrics.json",
                 "story.jsonl", "demo/climate.warc.gz", "demo/out.jsonl",
                 "demo/profile/profile.md"):
        if not (folder / name).is_file():
            raise AssertionError(f"the tour did not write {name}")
    story = json.loads((folder / "story.jsonl").read_text().splitlines()[0])
    if "error" in story or not story.get("evidence"):
        raise AssertionError(f"story.jsonl has no prediction with evidence: {story}")
    label = story["topic"]["label"]
    passages = story["evidence"].get("topic", {}).get(label) or [{"text": ""}]
    crawl = (folder / "demo/out.jsonl").read_text().splitlines()
    errors = sum("error" in json.loads(line) for line in crawl)
    return [f"story.html: topic {label} ({story['topic']['score']:.3f}), best passage: "
            f"{passages[0]['text'][:80]!r}",
            f"crawl: {len(crawl)} lines, {errors} with errors; profile rows: "
            f"{len((folder / 'demo/profile/profile.md').read_text().splitlines())}"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", type=Path, metavar="DIR", help="run in DIR and keep it")
    parser.add_argument("--all", action="store_true",
                        help="also the commands marked `not run: takes about N minutes`")
    parser.add_argument("--reuse", type=Path, metavar="RUNS",
                        help="copy the trained runs in RUNS and skip the trainings that wrote "
                             "them (the README's tour is then checked on the copied model)")
    parser.add_argument("--list", action="store_true", help="print the plan; run nothing")
    return parser


def skipped_by_reuse(command: Command, folder: Path, reuse: Path | None) -> bool:
    if not reuse or not command.training:
        return False
    words = command.text.split()
    config = words[words.index("--config") + 1] if "--config" in words else next(
        (w.split("=", 1)[1] for w in words if w.startswith("CONFIG=")), "configs/bbc_topic.yaml")
    job = Path(config).stem  # copied again: a shortened (--set) run may have overwritten it
    if "--set" in words or not (reuse / job / "model" / "config.json").is_file():
        return False
    shutil.rmtree(folder / "runs" / job, ignore_errors=True)
    return shutil.copytree(reuse / job, folder / "runs" / job, symlinks=True) is not None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    commands = all_commands()
    order = plan(commands, args.all)
    skipped = [f"not run  {c.page}:{c.line}  {c.text}  ({c.not_run})"
               for c in commands if c not in order]
    if args.list:
        print("\n".join([f"run      {c.page}:{c.line}  {c.text}" for c in order] + skipped))
        return 0
    began = time.monotonic()
    folder = args.keep.resolve() if args.keep else Path(tempfile.mkdtemp(prefix="docs-cmds-"))
    folder.mkdir(parents=True, exist_ok=True)
    reuse = args.reuse.resolve() if args.reuse else None
    done, timings, found, where = {}, [], [], "setup"
    runner = Runner(folder)
    try:
        link_checkout(folder, reuse)
        write_inputs(folder)
        for command in order:
            where = f"{command.page}:{command.line}"
            if command.text in done:
                timings.append((where, command.text, f"same as {done[command.text]}"))
                continue
            if skipped_by_reuse(command, folder, reuse):
                timings.append((where, command.text, f"reused {reuse}"))
                continue
            print(f"[{time.monotonic() - began:6.0f} s] {where}\n$ {command.text}", flush=True)
            start = time.monotonic()
            runner.run(command)
            done[command.text] = where
            timings.append((where, command.text, f"{time.monotonic() - start:.1f} s"))
            if command.page == "README.md" and command.text == tour_commands()[-1]:
                found = check_tour(folder)
    except (subprocess.CalledProcessError, RuntimeError, AssertionError, OSError) as err:
        print(f"docs commands FAILED after {time.monotonic() - began:.0f} s at {where}: {err}",
              file=sys.stderr)
        return 1
    finally:
        runner.stop()
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    ran = sum(t[2].endswith(" s") for t in timings)
    print(f"\ndocs commands passed: {ran} run, {len(timings) - ran} not rerun, "
          f"{len(commands) - len(order)} not run, in {time.monotonic() - began:.0f} s")
    for where, text, how in timings:
        print(f"  {how:>24}  {where}  {text}")
    print("\n".join(f"  {line}" for line in skipped + found))
    return 0


if __name__ == "__main__":
    sys.exit(main())
