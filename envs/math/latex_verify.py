"""LaTeX answer comparison with math-verify, strictly in a child process.

math-verify (PyPI ``math-verify``, the ``math`` extra) parses LaTeX with sympy,
which can take unbounded time on hostile input and, through its plain-expression
extractor, evaluate Python. So it never runs in the env's process: one worker
subprocess per process (started on first use, reused, restarted after a kill)
runs only its LaTeX extractor. Each comparison has a hard wall-clock ``timeout``
(the worker is killed when it passes, and a new one starts at once in the
background) and an input-size cap; both count as "not equal". Starting a worker
(about a second: sympy's import) is not part of a call's ``timeout``; it has its
own ``start_timeout``. Without math-verify installed, :func:`verify_latex` answers False and the
exact normaliser in :mod:`backtrack_gym.envs.math.answers` is all there is.

POSIX only (the reply is awaited with ``select`` on the worker's pipe).
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import os
import select
import subprocess
import sys
import threading
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

WORKER = Path(__file__).with_name("_latex_worker.py")


def math_verify_installed() -> bool:
    """Whether math-verify can be imported (checked without importing it here)."""
    return importlib.util.find_spec("math_verify") is not None


class LatexVerifier:
    """A math-verify worker process with hard per-call timeouts.

    Args:
        start_timeout: seconds allowed for the worker to start (importing sympy
            takes about a second); a worker that does not start in time marks
            math-verify unusable for this verifier.
    """

    def __init__(self, start_timeout: float = 60.0):
        self.start_timeout = start_timeout
        self._proc: subprocess.Popen | None = None
        self._ready = False
        self._owner = os.getpid()
        self._buffer = b""
        self._unusable: str | None = None if math_verify_installed() else "math-verify is not installed"
        self._lock = threading.Lock()

    @property
    def unusable(self) -> str | None:
        """Why math-verify cannot be used here, or None."""
        return self._unusable

    def verify(self, gold: str, pred: str, *, timeout: float = 5.0, max_chars: int = 1000) -> bool:
        """Whether math-verify finds ``pred`` equal to ``gold`` within ``timeout`` seconds.

        Inputs longer than ``max_chars`` are not sent and count as not equal.
        """
        if max(len(gold), len(pred)) > max_chars or self._unusable:
            return False
        with self._lock:
            proc = self._worker()
            if proc is None:
                return False
            # The worker's own (signal-based) limits usually end slow cases first and
            # keep it warm; the kill at ``timeout`` is the guarantee.
            inner = max(1, int(timeout / 3))
            request = json.dumps({"gold": gold, "pred": pred, "timeout": inner}) + "\n"
            try:
                proc.stdin.write(request.encode())
                proc.stdin.flush()
                reply = self._read(proc, time.monotonic() + timeout)
            except (OSError, TimeoutError, ValueError):
                self._stop()
                self._spawn()  # warm up the replacement while the caller moves on
                return False
        return reply.get("equal") is True

    def _worker(self) -> subprocess.Popen | None:
        if self._owner != os.getpid():
            # A forked child must not share its parent's pipes: start its own worker.
            self._proc, self._ready, self._owner, self._buffer = None, False, os.getpid(), b""
        if self._proc is None or self._proc.poll() is not None:
            self._stop()
            self._spawn()
        if self._proc is None:
            return None
        if not self._ready:
            try:
                ready = self._read(self._proc, time.monotonic() + self.start_timeout)
            except (OSError, TimeoutError, ValueError) as err:
                ready = {"ready": False, "error": f"the math-verify worker did not start: {err!r}"}
            if not ready.get("ready"):
                self._unusable = str(ready.get("error", "the math-verify worker did not start"))
                self._stop()
                return None
            self._ready = True
        return self._proc

    def _spawn(self) -> None:
        self._ready = False
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-u", str(WORKER)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
        except OSError as err:
            self._proc, self._unusable = None, f"the math-verify worker could not start: {err}"

    def _read(self, proc: subprocess.Popen, deadline: float) -> dict[str, Any]:
        """One JSON line from the worker, or TimeoutError at ``deadline``."""
        fd = proc.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError("math-verify took too long")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise OSError("the math-verify worker exited")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        reply = json.loads(line)
        if not isinstance(reply, dict):
            raise ValueError(f"unexpected reply {reply!r}")
        return reply

    def _stop(self) -> None:
        proc, self._proc, self._ready, self._buffer = self._proc, None, False, b""
        if proc is not None and self._owner == os.getpid():
            proc.kill()
            proc.wait()
            for pipe in (proc.stdin, proc.stdout):
                pipe.close()

    def close(self) -> None:
        """Stop the worker (a later call starts a new one)."""
        with self._lock:
            self._stop()


_VERIFIER = LatexVerifier()
atexit.register(_VERIFIER.close)


@lru_cache(maxsize=4096)
def verify_latex(gold: str, pred: str, *, timeout: float = 5.0, max_chars: int = 1000) -> bool:
    """Compare two LaTeX answers with the process-wide worker (results are cached)."""
    return _VERIFIER.verify(gold, pred, timeout=timeout, max_chars=max_chars)


def verifier() -> LatexVerifier:
    """The process-wide verifier behind :func:`verify_latex`."""
    return _VERIFIER
