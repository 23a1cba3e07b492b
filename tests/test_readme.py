"""Every fenced ```bash and ```python block of README.md runs as written, so the README cannot drift.

Blocks run in README order, in a scratch copy of the working tree (its `.venv` a link to the real
one), with the virtual environment's `bin/` first on PATH, as after `source .venv/bin/activate`
(what the README tells users). bash blocks run with `set -euo pipefail`; python blocks are fed to
`python -` from the copy's root, as if pasted into a REPL there.

A block may be preceded (blank lines between are fine) by a marker that is visible in the README's
source, `<!-- test: DIRECTIVE[; DIRECTIVE ...] -->`, with directives
    skip (reason)                  the block is never run (the reason is required and is shown)
    slow                           run only by the slow test (`make test-slow`)
    skip-line "PREFIX" (reason)    lines that start with PREFIX are not run (e.g. `make test`, which
                                   would run this suite again)
Everything else runs in the default suite. Two tests:
* `test_readme_fast_blocks`: the blocks not marked slow, after a stand-in for the state the slow
  blocks leave: the demo recipe `configs/save/tiny.yaml` trained for 2 steps, so `runs/save-tiny/`
  holds a checkpoint and an export (what `make demo` leaves after its 40 steps);
* `test_readme_all_blocks` (slow): every block but the skipped ones, `make demo` included.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RUN_LANGS = {"bash": "bash", "sh": "bash", "shell": "bash", "console": "bash", "python": "python", "py": "python"}
MARKER = re.compile(r"<!--\s*test:(.*?)-->", re.S)
FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`\s]*)[^`]*$")
COPY_IGNORE = shutil.ignore_patterns(".git", ".venv", "runs", "outputs", "wandb", "lightning_logs", "__pycache__",
                                     "*.egg-info", ".pytest_cache", ".ci-cache")
FAST_TIMEOUT_S, SLOW_TIMEOUT_S = 600, 900  # per block; generous for a loaded machine
MARKER_HELP = ("if the command is long, mark it `<!-- test: slow -->`; if it cannot run here (real weights, a "
               "download, network), mark it `<!-- test: skip (why) -->` on the line(s) before its block")


@dataclass
class Block:
    lang: str  # "bash" | "python"
    code: str
    line: int  # 1-based line of the opening fence in README.md
    slow: bool = False
    skip: str | None = None  # reason
    skip_lines: list[tuple[str, str]] = field(default_factory=list)  # (prefix, reason)

    @property
    def label(self) -> str:
        first = next((ln.strip() for ln in self.code.splitlines() if ln.strip()), "")
        return f"README.md:{self.line} ```{self.lang} {first[:60]}"

    def runnable_code(self) -> str:
        if not self.skip_lines:
            return self.code
        kept, skipping = [], False
        for ln in self.code.splitlines():
            if not skipping and any(ln.strip().startswith(p) for p, _ in self.skip_lines):
                skipping = ln.rstrip().endswith("\\")  # a skipped command's continuation lines go too
                continue
            if skipping:
                skipping = ln.rstrip().endswith("\\")
                continue
            kept.append(ln)
        return "\n".join(kept) + "\n"


def parse_marker(text: str, where: str) -> dict:
    out = {"slow": False, "skip": None, "skip_lines": []}
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        if part == "slow":
            out["slow"] = True
        elif m := re.fullmatch(r"skip\s*\((.+)\)", part, re.S):
            out["skip"] = m.group(1).strip()
        elif m := re.fullmatch(r'skip-line\s+"([^"]+)"\s*\((.+)\)', part, re.S):
            out["skip_lines"].append((m.group(1), m.group(2).strip()))
        else:
            raise ValueError(f"{where}: unknown README test marker directive {part!r}; use `skip (reason)`, "
                             f'`slow` or `skip-line "PREFIX" (reason)`')
    return out


def parse_readme(text: str) -> list[Block]:
    """The fenced bash/python blocks of a Markdown text with their markers."""
    lines = text.splitlines()
    blocks, pending, pending_line, i = [], None, 0, 0
    while i < len(lines):
        line = lines[i]
        if "<!--" in line and "test:" in line:
            chunk, j = line, i
            while "-->" not in chunk and j + 1 < len(lines):  # a marker may span lines
                j += 1
                chunk += "\n" + lines[j]
            m = MARKER.search(chunk)
            if m:
                pending, pending_line = parse_marker(m.group(1), f"README.md:{i + 1}"), i + 1
                i = j + 1
                continue
        fm = FENCE.match(line)
        if fm:
            fence, lang = fm.group("fence"), fm.group("info").lower()
            body, j = [], i + 1
            while j < len(lines) and not lines[j].strip().startswith(fence):
                body.append(lines[j])
                j += 1
            if lang in RUN_LANGS:
                blocks.append(Block(RUN_LANGS[lang], "\n".join(body) + "\n", i + 1, **(pending or {})))
            elif pending is not None:
                raise ValueError(f"README.md:{pending_line}: a test marker before a ```{lang} block, which is not run")
            pending = None
            i = j + 1
            continue
        if pending is not None and line.strip():
            raise ValueError(f"README.md:{pending_line}: a test marker must come right before a fenced block "
                             f"(only blank lines between), found {line.strip()[:60]!r}")
        i += 1
    if pending is not None:
        raise ValueError(f"README.md:{pending_line}: a test marker after the last block")
    return blocks


# --------------------------------------------------------------------------------------------------
# the parser itself (fast, no commands run)
# --------------------------------------------------------------------------------------------------


def test_parser_reads_markers_and_blocks():
    text = "\n".join([
        "intro", "```bash", "make demo", "make test   # comment", "```",
        "<!-- test: skip (needs SD 1.5 weights) -->", "", "```bash", "huggingface-cli download x", "```",
        "<!-- test: slow; skip-line \"make test\" (recursion) -->", "```bash", "make demo", "make test \\", "  -k x",
        "echo ok", "```", "```python", "print(1)", "```", "```text", "not run", "```", "```", "layout", "```",
    ])
    blocks = parse_readme(text)
    assert [b.lang for b in blocks] == ["bash", "bash", "bash", "python"]
    assert blocks[0].skip is None and not blocks[0].slow and blocks[0].line == 2
    assert blocks[1].skip == "needs SD 1.5 weights"
    assert blocks[2].slow and blocks[2].runnable_code() == "make demo\necho ok\n"
    assert blocks[3].code == "print(1)\n"
    with pytest.raises(ValueError, match="unknown README test marker"):
        parse_readme("<!-- test: fast -->\n```bash\nls\n```")
    with pytest.raises(ValueError, match="right before a fenced block"):
        parse_readme("<!-- test: slow -->\nsome text\n```bash\nls\n```")
    with pytest.raises(ValueError, match="skip"):
        parse_readme("<!-- test: skip -->\n```bash\nls\n```")  # a skip needs its reason


def test_readme_has_blocks_and_every_skip_has_a_reason():
    blocks = parse_readme(README.read_text(encoding="utf-8"))
    assert blocks, "README.md has no ```bash / ```python blocks"
    runnable = [b for b in blocks if not b.skip]
    assert any("scripts/edit.py" in b.code for b in runnable if not b.slow), "no fast block runs scripts/edit.py"
    assert any("scripts/export.py" in b.code for b in runnable if not b.slow), "no fast block runs scripts/export.py"
    for b in blocks:
        assert b.skip is None or len(b.skip) > 5, f"{b.label}: say why it is skipped"
        assert "make test" not in b.runnable_code() or b.skip, (
            f"{b.label}: `make test` would run this suite again: add `skip-line \"make test\" (reason)`")


# --------------------------------------------------------------------------------------------------
# running the blocks
# --------------------------------------------------------------------------------------------------


def scratch_copy(tmp_path: Path) -> Path:
    """A copy of the working tree without build outputs, `.venv` linked to the real one."""
    repo = tmp_path / "vidtune"
    shutil.copytree(ROOT, repo, ignore=COPY_IGNORE, symlinks=True)
    venv = Path(sys.prefix)
    (repo / ".venv").symlink_to(venv if venv != Path(sys.base_prefix) else ROOT / ".venv")
    return repo


def environment(repo: Path) -> dict:
    env = dict(os.environ)
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    if sys.prefix != sys.base_prefix:
        env["VIRTUAL_ENV"] = sys.prefix
    env.pop("PYTHONPATH", None)  # as a user's shell: the copy's root is found as the current directory
    env.setdefault("WANDB_MODE", "offline")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("OMP_NUM_THREADS", "2")
    env[NESTED] = "1"
    return env


NESTED = "VIDTUNE_README_TEST"  # set for the blocks: a test suite started by a block skips these tests
nested = pytest.mark.skipif(os.environ.get(NESTED) == "1", reason="started by a README block (no recursion)")


def run_block(block: Block, repo: Path, env: dict, timeout: int) -> None:
    code = block.runnable_code()
    if re.search(r"^\s*make\s+(test|test-slow)\b", code, re.M):
        pytest.fail(f"{block.label}: runs the test suite, which holds this test: add "
                    f'`<!-- test: skip-line "make test" (recursion) -->` (or skip) before the block')
    if block.lang == "bash":
        cmd, stdin = ["bash", "-c", "set -euo pipefail\n" + code], None
    else:
        cmd, stdin = [sys.executable, "-"], code
    returncode, stdout, stderr = run_group(cmd, repo, env, stdin, timeout)
    if returncode is None:
        pytest.fail(f"{block.label}: still running after {timeout} s (stopped); {MARKER_HELP}")
    if returncode != 0:
        out = (stdout[-3000:] + "\n" + stderr[-4000:]).strip()
        pytest.fail(f"{block.label}: exit status {returncode} when run as written.\n--- block ---\n{code}"
                    f"--- output (tail) ---\n{out}\n--- ({MARKER_HELP})")


def run_group(cmd, cwd, env, stdin, timeout):
    """Run in a new process group and, on timeout, stop the whole group (a block's `make` or `python`
    children must not outlive it); returns (returncode or None on timeout, stdout, stderr)."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(stdin, timeout=timeout)
        return proc.returncode, out, err
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        return None, out, err
    finally:
        if proc.poll() is None:  # interrupted (Ctrl-C): do not leave the group running
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def demo_run_standin(repo: Path, env: dict) -> None:
    """What `make demo` leaves in runs/save-tiny (a checkpoint and an export), from 2 steps of its recipe."""
    rc, out, err = run_group(
        [sys.executable, "-m", "train", "fit", "-c", "configs/save/tiny.yaml", "--trainer.max_steps", "2",
         "--data.init_args.steps_per_epoch", "2", "--trainer.limit_val_batches", "0"],
        repo, env, None, FAST_TIMEOUT_S)
    assert rc == 0, f"the stand-in for `make demo` failed (exit status {rc}):\n{out[-2000:]}\n{err[-3000:]}"
    assert (repo / "runs/save-tiny/checkpoints/last.ckpt").is_file()
    assert (repo / "runs/save-tiny/export/export.json").is_file()


@nested
def test_readme_fast_blocks(tmp_path):
    blocks = [b for b in parse_readme(README.read_text(encoding="utf-8")) if not b.skip and not b.slow]
    repo = scratch_copy(tmp_path)
    env = environment(repo)
    demo_run_standin(repo, env)
    for block in blocks:
        run_block(block, repo, env, FAST_TIMEOUT_S)
    assert (repo / "outputs/edit/metrics.json").is_file()  # the README's edit command wrote its results


def venv_is_set_up() -> bool:
    """`make demo` runs scripts/setup.sh, which reinstalls when the stamp of pyproject.toml is missing;
    from a scratch copy that would point the editable install at the copy, so require the stamp."""
    digest = hashlib.sha1((ROOT / "pyproject.toml").read_bytes()).hexdigest()[:12]
    return (ROOT / ".venv" / f".installed-{digest}").is_file()


@nested
@pytest.mark.slow
def test_readme_all_blocks(tmp_path):
    if not venv_is_set_up():
        pytest.fail("the .venv is not set up for the current pyproject.toml: run `make setup` first")
    blocks = [b for b in parse_readme(README.read_text(encoding="utf-8")) if not b.skip]
    repo = scratch_copy(tmp_path)
    (repo / ".venv").unlink()
    (repo / ".venv").symlink_to(ROOT / ".venv")
    env = environment(repo)
    for block in blocks:
        run_block(block, repo, env, SLOW_TIMEOUT_S)
    assert (repo / "runs/save-tiny/export/export.json").is_file()
