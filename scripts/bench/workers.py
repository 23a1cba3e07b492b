"""A benchmark variant in its own long-lived worker process, spoken to one JSON line each way (so a
variant's peak memory is its own while the parent still alternates the variants step by step).

The worker is `python -m <module> --worker <args...>` run from the repository root with `modules`
and this harness (`bench`) importable; it answers on stdout with lines that start with `MARK` (other
output, such as library prints, is ignored; stderr goes to a log whose tail is shown if it dies)."""
from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
MARK = "@@vidtune-bench "


def answer(channel, obj: dict) -> None:
    """Worker side: one answer line to the parent."""
    channel.write(MARK + json.dumps(obj) + "\n")
    channel.flush()


class WorkerProcess:
    def __init__(self, module: str, args: list[str], name: str, timeout_s: float):
        self.name, self.timeout = name, timeout_s
        self.log = tempfile.NamedTemporaryFile(prefix=f"vidtune-bench-{name}-", suffix=".log", delete=False)
        env = dict(os.environ)
        paths = [str(REPO_ROOT), str(REPO_ROOT / "scripts")]
        env["PYTHONPATH"] = os.pathsep.join(paths + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        env.setdefault("HF_HUB_OFFLINE", "1")
        self.proc = subprocess.Popen([sys.executable, "-m", module, "--worker", *args], cwd=REPO_ROOT, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True,
                                     bufsize=1)
        self.lines: queue.Queue = queue.Queue()

        def pump():
            for line in self.proc.stdout:
                if line.startswith(MARK):
                    self.lines.put(line[len(MARK):])
            self.lines.put(None)

        threading.Thread(target=pump, daemon=True).start()

    def recv(self) -> dict:
        try:
            line = self.lines.get(timeout=self.timeout)
        except queue.Empty:
            self.close()
            raise TimeoutError(f"benchmark worker '{self.name}' gave no answer in {self.timeout:.0f} s") from None
        if line is None:
            self.proc.wait()
            self.log.flush()
            tail = "\n".join(Path(self.log.name).read_text(errors="replace").strip().splitlines()[-30:])
            raise RuntimeError(f"benchmark worker '{self.name}' exited ({self.proc.returncode}):\n{tail}")
        return json.loads(line)

    def send(self, op: str, **kw) -> None:
        self.proc.stdin.write(json.dumps({"op": op, **kw}) + "\n")
        self.proc.stdin.flush()

    def call(self, op: str, **kw) -> dict:
        self.send(op, **kw)
        return self.recv()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        Path(self.log.name).unlink(missing_ok=True)
