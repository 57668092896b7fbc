"""Every command in README.md and docs/*.md is checked against the code, without running
the long work, so the docs cannot drift from it.

Shell blocks (```bash, ```sh, ```console): `article-classifier ...` and `python -m
model.cli ...` parse with the real CLI parser; `python -m MODULE ...` (also after `torchrun`
or `accelerate launch`) names an importable module whose own parser takes the flags;
`make TARGET` is a real target (`make -n` succeeds); `curl` names a real route and sends
a body the service's request model accepts; `pip install -e '.[X]'` names a real extra;
`configs/...` paths exist. A command may end in `# not run: needs X` (a GPU, a cluster):
it is still checked here, only never executed. ```python blocks compile, import only names
that exist, and call imported functions (and the classifier `load_classifier` returns)
with arguments their signatures take. Illustrative output goes in ```text or ```json
blocks, which are skipped; a fence without a language is refused. Paths in backticks and
relative links must exist, and docs/layout.md must name every package and import layer.
`make docs-check` (bench/docs_commands.py) runs them for real, the README's tour first;
here every command must be in its plan or end in `# not run: needs X` / `# not run: takes
about N minutes` (those run with --all).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import functools
import importlib
import inspect
import io
import json
import re
import shlex
import subprocess
import typing
from pathlib import Path

import pytest

from bench.docs_commands import all_commands, plan, shell_commands, substitute, tour_commands

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL, SKIPPED = {"bash", "sh", "console"}, {"text", "json", "yaml"}
FENCE = re.compile(r"^```(\S*)\n(.*?)^```", re.S | re.M)
MODULE_PARSERS = {"train": ("train.run", "parse_args")}  # python -m train: train/__main__.py


def blocks(doc: Path):
    """(language, first line number, body) of every fenced block."""
    text = doc.read_text(encoding="utf-8")
    for match in FENCE.finditer(text):
        yield match.group(1), text[:match.start()].count("\n") + 1, match.group(2)


def all_blocks(docs=DOCS):
    return [(doc, *block) for doc in docs for block in blocks(doc)]


class Parsed(Exception):
    """Raised by the patched parse_args: the flags were accepted, main() goes no further."""


def parse_module(name: str, argv: list[str]) -> None:
    """argv through MODULE's own argparse parser (build_parser(), parse_args(argv), or the
    parser main() builds, stopped right after parsing)."""
    module_name, attr = MODULE_PARSERS.get(name, (name, None))
    module = importlib.import_module(module_name)
    if attr:
        getattr(module, attr)(argv)
    elif hasattr(module, "build_parser"):
        module.build_parser().parse_args(argv)
    elif hasattr(module, "main"):
        real = argparse.ArgumentParser.parse_args

        def parse_then_stop(self, args=None, namespace=None):
            real(self, args, namespace)
            raise Parsed

        argparse.ArgumentParser.parse_args = parse_then_stop
        try:
            module.main(argv)
        except Parsed:
            return
        finally:
            argparse.ArgumentParser.parse_args = real
        raise AssertionError(f"{name}.main() never parsed its arguments")
    else:
        raise AssertionError(f"module {name} has no command line (no build_parser or main)")


def parse(fn, *args) -> str | None:
    """None when argparse accepts, else its message."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            fn(*args)
    except SystemExit as exit_:
        if exit_.code:
            return err.getvalue().strip().splitlines()[-1] if err.getvalue() else str(exit_)
    except (ImportError, AssertionError) as error:
        return f"{type(error).__name__}: {error}"
    return None


def cli_parse(argv: list[str]) -> None:
    from model.cli import build_parser

    build_parser().parse_args(argv)


def check_python_m(words: list[str]) -> str | None:
    i = words.index("-m")
    name, argv = words[i + 1], words[i + 2:]
    if name == "model.cli":
        return parse(cli_parse, argv)
    return parse(parse_module, name, argv)


@functools.cache
def routes() -> set[tuple[str, str]]:
    found = set()
    for source in (ROOT / "model" / "serving").glob("*.py"):
        for method, path in re.findall(r'@app\.(get|post)\("([^"]+)"', source.read_text()):
            found.add((method.upper(), re.sub(r"\{[^}]+\}", "*", path)))
    return found


def check_curl(words: list[str]) -> str | None:
    url = next((w for w in words if "localhost:" in w or "127.0.0.1:" in w), None)
    if url is None:
        return "curl without a localhost URL"
    path = "/" + url.split("/", 1)[1] if "/" in url.split("://")[-1] else "/"
    path = path.split("?")[0] if "://" not in path else "/"
    body = words[words.index("-d") + 1] if "-d" in words else None
    method = "POST" if body is not None else "GET"
    if (method, path) not in routes():
        return f"no route {method} {path} in model/serving (have {sorted(routes())})"
    if body is not None:
        from model.serving.service import PredictRequest

        try:
            data = json.loads(body)
            unknown = set(data) - set(PredictRequest.model_fields)
            if unknown:
                return f"the request body has fields the service does not take: {unknown}"
            PredictRequest.model_validate(data)
        except ValueError as err:
            return f"the request body is refused: {err}"
    return None


def check_make(words: list[str]) -> str | None:
    proc = subprocess.run(["make", "-n", *words[1:]], cwd=ROOT, capture_output=True, text=True)
    return None if proc.returncode == 0 else f"make -n failed: {proc.stderr.strip()[-300:]}"


def check_pip(words: list[str]) -> str | None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    for word in words:
        if m := re.fullmatch(r"\.\[([\w,-]+)\]", word):
            missing = set(m.group(1).split(",")) - set(extras)
            return f"no extra {missing} in pyproject.toml" if missing else None
    return f"pip: only `pip install -e '.[EXTRA]'` is documented here, not {words}"


def check_command(command: str) -> str | None:
    """None when `command` matches the code, else what is wrong."""
    try:
        words = shlex.split(command)
    except ValueError as err:
        return f"does not parse as shell: {err}"
    while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):  # VAR=value prefixes
        words = words[1:]
    for word in words:
        if word.startswith("configs/") and not (ROOT / word).exists():
            return f"no such config: {word}"
    program = words[0] if words else ""
    if program == "article-classifier":
        return parse(cli_parse, words[1:])
    if program in ("python", "python3", "torchrun") and "-m" in words:
        return check_python_m(words)
    if program == "accelerate" and words[1:2] == ["launch"] and "-m" in words:
        return check_python_m(words)
    if program in (".", "source"):  # the README's `. .venv/bin/activate`
        return None if words[1:] == [".venv/bin/activate"] else f"sources {words[1:]}"
    checks = {"make": check_make, "curl": check_curl, "pip": check_pip}
    if program in checks:
        return checks[program](words)
    return f"no check knows the program {program!r}: add one to tests/test_docs.py"


def shell_cases(docs=DOCS):
    return [(f"{doc.name}:{line}", command) for doc, lang, line, body in all_blocks(docs)
            if lang in SHELL for command, _ in shell_commands(body)]


def python_problems(source: str) -> list[str]:
    """Compile errors, imports of names that do not exist, and calls of imported functions
    (or of methods of what they return) with arguments their signatures do not take."""
    try:
        tree = ast.parse(source)
    except SyntaxError as err:
        return [f"does not compile: {err}"]
    names, problems = {}, []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            try:
                module = importlib.import_module(node.module)
            except ImportError as err:
                problems.append(f"from {node.module}: {err}")
                continue
            for alias in node.names:
                if not hasattr(module, alias.name):
                    problems.append(f"{node.module} has no {alias.name}")
                else:
                    names[alias.asname or alias.name] = getattr(module, alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                try:
                    importlib.import_module(alias.name)
                except ImportError as err:
                    problems.append(f"import {alias.name}: {err}")
    for node in ast.walk(tree):  # x = load_classifier(...): x has the annotated return type
        if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
                and isinstance(node.value.func, ast.Name) and node.value.func.id in names):
            returned = typing.get_type_hints(names[node.value.func.id]).get("return")
            if inspect.isclass(returned):
                names.update({t.id: returned for t in node.targets if isinstance(t, ast.Name)})
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and callable(names.get(func.id)):
            target, label = names[func.id], func.id
        elif (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
              and inspect.isclass(names.get(func.value.id))):
            target = getattr(names[func.value.id], func.attr, None)
            label = f"{names[func.value.id].__name__}.{func.attr}"
            if target is None:
                problems.append(f"{label} does not exist")
                continue
            args = [None] + [None] * len(node.args)  # self
        else:
            continue
        if not isinstance(func, ast.Attribute):
            args = [None] * len(node.args)
        try:
            inspect.signature(target).bind(*args, **{k.arg: None for k in node.keywords
                                                     if k.arg})
        except TypeError as err:
            problems.append(f"{label}(...): {err}")
        except ValueError:
            pass  # no signature to check (a builtin)
    return problems


def python_cases(docs=DOCS):
    return [(f"{doc.name}:{line}", body) for doc, lang, line, body in all_blocks(docs)
            if lang == "python"]


@pytest.mark.parametrize("where,command", shell_cases())
def test_shell_command_matches_the_code(where, command):
    assert check_command(command) is None, f"{where}: {command}\n{check_command(command)}"


@pytest.mark.parametrize("where,source", python_cases())
def test_python_block_matches_the_code(where, source):
    assert not python_problems(source), f"{where}: {python_problems(source)}"


def test_every_block_says_its_language():
    bare = [f"{doc.name}:{line}" for doc, lang, line, _ in all_blocks()
            if lang not in SHELL | SKIPPED | {"python"}]
    assert not bare, f"fenced blocks without a known language (use text for output): {bare}"


def link_problems(doc: Path) -> list[str]:
    text, problems = doc.read_text(encoding="utf-8"), []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = target.partition("#")
        file = (doc.parent / path).resolve() if path else doc
        if not file.exists():
            problems.append(f"link to a missing file: {target}")
        elif anchor and file.suffix == ".md" and anchor not in slugs(file):
            problems.append(f"link to a missing heading: {target}")
    prose = FENCE.sub("", text)
    for path in re.findall(r"`((?:model|train|bench|tests|configs|docs)/[\w./-]*)`", prose):
        if not (ROOT / path.rstrip("/")).exists() and not path.startswith("bench/results"):
            problems.append(f"no such path: {path}")
    return problems


def slugs(doc: Path) -> set[str]:
    headings = re.findall(r"^#+ (.+)$", FENCE.sub("", doc.read_text(encoding="utf-8")), re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.name)
def test_links_and_paths_exist(doc):
    assert not link_problems(doc)


def test_layout_page_matches_the_tree():
    layout = (ROOT / "docs" / "layout.md").read_text(encoding="utf-8")
    packages = [f"model/{p.parent.name}/" for p in (ROOT / "model").glob("*/__init__.py")]
    modules = [f"train/{p.name}" for p in (ROOT / "train").glob("*.py") if p.stem != "__init__"]
    missing = [name for name in packages + modules if f"`{name}`" not in layout]
    assert not missing, f"docs/layout.md does not name: {missing}"
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"][
        "contracts"]
    for contract in contracts:
        if contract["type"] == "layers":
            chain = " > ".join(re.sub(r"\s+", " ", layer) for layer in contract["layers"])
            assert chain in re.sub(r"\s+", " ", layout), f"docs/layout.md lacks `{chain}`"


def test_the_tour_is_what_the_script_runs():
    tour = tour_commands()
    for step in ("make train", ". .venv/bin/activate", "--evidence", "article-classifier serve",
                 "curl", "bench.demo_warc", "article-classifier profile"):
        assert any(step in command for command in tour), f"the tour lacks {step}"
    assert tour.index(". .venv/bin/activate") < min(
        i for i, c in enumerate(tour) if c.startswith(("article-classifier", "python -m")))


def test_every_command_is_run_or_says_why_not():
    commands = all_commands()
    assert sorted(c.text for c in commands) == sorted(c for _, c in shell_cases()), \
        "bench/docs_commands.py does not read the same commands as this test"
    planned, everything = plan(commands, run_long=False), plan(commands, run_long=True)
    for c in commands:
        where = f"{c.page}:{c.line}: {c.text}"
        if c.not_run is None:
            assert c in planned, f"{where} is neither run nor marked `# not run: ...`"
        else:
            assert c not in planned, where
            assert re.match(r"(needs \S|takes about \d+ minutes|as \S)", c.not_run), \
                f"{where}: `not run: {c.not_run}` does not say what it needs or how long"
            assert (c in everything) == c.long, where
    for c in everything:  # no placeholder survives the substitutions
        text = substitute(c, 12345)
        assert not re.search(r"\bMODEL\b|:8000|\.\./shared|\bcrawl\.warc", text), (c, text)


def test_the_checks_catch_a_bad_doc(tmp_path):
    bad = tmp_path / "README.md"
    bad.write_text((ROOT / "README.md").read_text() + "\n```bash\n"
                   "article-classifier predict MODEL in.jsonl -o out.jsonl --no-such-flag\n"
                   "article-classifier serve MODEL --backend no-such-backend\n"
                   "python -m bench.no_such_bench --model MODEL\n"
                   "python -m train.evaluate --model M --config configs/bbc_topic.yaml --engine x\n"
                   "python -m bench.infer --model M --no-such-flag\n"
                   "make no-such-target\n"
                   "python -m train --config configs/no_such.yaml\n"
                   "curl -s localhost:8000/no-such-route\n"
                   "```\n\n```python\nfrom model import load_classifier, no_such_name\n"
                   "clf = load_classifier('m', no_such_option='torch')\n"
                   "clf.predict('x', no_such=1)\n"
                   "```\n")
    found = {command: check_command(command) for _, command in shell_cases([bad])}
    assert sum(problem is not None for problem in found.values()) == 8, found
    problems = python_problems(python_cases([bad])[-1][1])
    assert len(problems) == 3, problems  # no_such_name, no_such_option=, no_such=
    links = tmp_path / "links.md"
    links.write_text("See `model/no_such.py`, [a page](no_such.md) and [a part](#no-such).\n")
    assert len(link_problems(links)) == 3, link_problems(links)
