"""LaTeX answer comparison with math-verify, strictly in a child process.

math-verify (PyPI ``math-verify``, the ``math`` extra) parses LaTeX with sympy,
which can take unbounded time on hostile input and, through its plain-expression
extractor, evaluate Python. So it never runs in the env's process: one worker
subprocess per process (started on first use, reused, restarted after a kill)
runs only its LaTeX extractor. Each comparison has a hard wall-clock ``timeout``
(the worker is killed when it passes, and a new one starts at once in the
background) and an input-size cap; both count as "not equal".

An episode may write many answers (each ``Answer:`` line, withdrawn by a
backtrack, is checked again), so its comparisons can share one
:class:`LatexBudget`: every second a comparison takes, including the wait for a
worker restarted after a kill or a crash, is charged to it, each comparison may
take at most what is left, and once it is spent the episode's further
comparisons answer "not equal" at once. Only the first start of a process's
worker (about a second: sympy's import) is charged to no one; it has its own
``start_timeout``. Without math-verify installed, :func:`verify_latex` answers
False and the exact normaliser in :mod:`backtrack_gym.envs.math.answers` is all
there is.

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
from collections import OrderedDict
from pathlib import Path
from typing import Any

WORKER = Path(__file__).with_name("_latex_worker.py")


def math_verify_installed() -> bool:
    """Whether math-verify can be imported (checked without importing it here)."""
    return importlib.util.find_spec("math_verify") is not None


class LatexBudget:
    """The seconds of math-verify one episode may spend, shared by all its comparisons.

    Args:
        seconds: the whole budget; must be positive.
    """

    def __init__(self, seconds: float):
        if not seconds > 0:
            raise ValueError(f"a LaTeX budget is a positive number of seconds, got {seconds!r}")
        self.seconds = float(seconds)
        self.spent = 0.0

    @property
    def left(self) -> float:
        """Seconds still to spend (0 once the budget is spent)."""
        return max(0.0, self.seconds - self.spent)

    def charge(self, seconds: float) -> None:
        """Count ``seconds`` as spent."""
        self.spent += max(0.0, seconds)


class LatexVerifier:
    """A math-verify worker process with hard per-call timeouts and optional shared budgets.

    Args:
        start_timeout: seconds allowed for the worker to start (importing sympy
            takes about a second); a worker that does not start in time marks
            math-verify unusable for this verifier.
    """

    def __init__(self, start_timeout: float = 60.0):
        self.start_timeout = start_timeout
        self._proc: subprocess.Popen | None = None
        self._ready = False
        self._start_deadline = 0.0
        # Whether the worker now starting replaces one that was killed or died: that wait is charged.
        self._charged_start = False
        self._owner = os.getpid()
        self._buffer = b""
        self._unusable: str | None = None if math_verify_installed() else "math-verify is not installed"
        self._lock = threading.Lock()

    @property
    def unusable(self) -> str | None:
        """Why math-verify cannot be used here, or None."""
        return self._unusable

    def verify(
        self, gold: str, pred: str, *, timeout: float = 5.0, max_chars: int = 1000, budget: LatexBudget | None = None
    ) -> bool:
        """Whether math-verify finds ``pred`` equal to ``gold`` within ``timeout`` seconds
        and what is left of ``budget``.

        Inputs longer than ``max_chars`` are not sent and count as not equal.
        """
        return self.compare(gold, pred, timeout=timeout, max_chars=max_chars, budget=budget) is True

    def compare(
        self, gold: str, pred: str, *, timeout: float = 5.0, max_chars: int = 1000, budget: LatexBudget | None = None
    ) -> bool | None:
        """Like :meth:`verify`, but None when ``budget`` ran out before math-verify decided.

        The call takes at most ``min(timeout, budget.left)`` seconds (plus, only for the
        first worker of this process, its start), all of it charged to ``budget``. False
        is a decision: not equal, or not shown equal within the whole ``timeout``.
        """
        if max(len(gold), len(pred)) > max_chars or self._unusable:
            return False
        limit = timeout if budget is None else min(timeout, budget.left)
        if limit <= 0:
            return None
        with self._lock:
            began = time.monotonic()
            try:
                proc = self._worker()
                if proc is None:
                    return False
                full_time = limit >= timeout
                if not self._ready:
                    charged = self._charged_start
                    wait_until = min(self._start_deadline, began + limit) if charged else self._start_deadline
                    started = self._await_start(proc, wait_until)
                    if started is not True:
                        return started
                    if charged:
                        full_time = False
                    else:
                        began = time.monotonic()  # the first start is charged to no one
                # The worker's own (signal-based) limits usually end slow cases first and
                # keep it warm; the kill at the deadline is the guarantee.
                inner = max(1, int(limit / 3))
                request = json.dumps({"gold": gold, "pred": pred, "timeout": inner}) + "\n"
                try:
                    proc.stdin.write(request.encode())
                    proc.stdin.flush()
                    reply = self._read(proc, began + limit)
                except (OSError, TimeoutError, ValueError):
                    self._stop()
                    self._spawn(charged=True)  # warm up the replacement while the caller moves on
                    return False if full_time else None
                return reply.get("equal") is True
            finally:
                if budget is not None:
                    budget.charge(time.monotonic() - began)

    def _worker(self) -> subprocess.Popen | None:
        """The worker process, started if there is none (it may not be ready yet)."""
        if self._owner != os.getpid():
            # A forked child must not share its parent's pipes: start its own worker.
            self._proc, self._ready, self._owner, self._buffer = None, False, os.getpid(), b""
            self._charged_start = False
        if self._proc is None or self._proc.poll() is not None:
            died = self._proc is not None
            self._stop()
            self._spawn(charged=died)
        return self._proc

    def _await_start(self, proc: subprocess.Popen, wait_until: float) -> bool | None:
        """True once the worker is ready; None when ``wait_until`` (a budget's end) comes
        first and it is still starting; False when it cannot start (math-verify is then unusable)."""
        try:
            ready = self._read(proc, wait_until)
        except TimeoutError as err:
            if time.monotonic() < self._start_deadline:
                return None  # the worker goes on starting for the next call
            ready = {"ready": False, "error": f"the math-verify worker did not start: {err!r}"}
        except (OSError, ValueError) as err:
            ready = {"ready": False, "error": f"the math-verify worker did not start: {err!r}"}
        if not ready.get("ready"):
            self._unusable = str(ready.get("error", "the math-verify worker did not start"))
            self._stop()
            return False
        self._ready, self._charged_start = True, False
        return True

    def _spawn(self, *, charged: bool) -> None:
        self._ready, self._charged_start = False, charged
        self._start_deadline = time.monotonic() + self.start_timeout
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
CACHE_SIZE = 4096
_CACHE: OrderedDict[tuple[str, str, float, int], bool] = OrderedDict()
_CACHE_LOCK = threading.Lock()


def verify_latex(
    gold: str, pred: str, *, timeout: float = 5.0, max_chars: int = 1000, budget: LatexBudget | None = None
) -> bool:
    """Compare two LaTeX answers with the process-wide worker, within ``timeout`` seconds
    and what is left of ``budget``.

    Decisions are cached, and a cached one costs no budget; an answer cut short by the
    budget is not cached (more time might have shown it equal).
    """
    key = (gold, pred, timeout, max_chars)
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    equal = _VERIFIER.compare(gold, pred, timeout=timeout, max_chars=max_chars, budget=budget)
    if equal is None:
        return False
    with _CACHE_LOCK:
        _CACHE[key] = equal
        if len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)
    return equal


def verifier() -> LatexVerifier:
    """The process-wide verifier behind :func:`verify_latex`."""
    return _VERIFIER
