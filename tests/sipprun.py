"""SIPp from the tests: bounded in calls and time, stopped by PID, results from its CSV."""
from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass

HERE = os.path.dirname(os.path.abspath(__file__))
SCENARIOS = os.path.join(HERE, "sipp")


def available() -> bool:
    return shutil.which("sipp") is not None


@dataclass
class Result:
    rc: int
    successful: int
    failed: int
    retransmissions: int
    out: str


class Sipp:
    def __init__(self, scenario: str, local: tuple, remote: tuple | None = None, *,
                 calls: int | None = None, rate: float | None = None, service: str = "callee",
                 extra: list[str] | None = None, timeout: float = 60.0):
        self.dir = tempfile.mkdtemp(prefix="kampx-sipp-")
        self.stat = os.path.join(self.dir, "stat.csv")
        path = scenario if os.path.isabs(scenario) else os.path.join(SCENARIOS, scenario)
        cmd = ["sipp", "-sf", path, "-i", local[0], "-p", str(local[1]), "-nostdin",
               "-trace_stat", "-stf", self.stat, "-fd", "1", "-timeout", f"{int(timeout)}s",
               "-timeout_error", "-recv_timeout", "10000", "-max_recv_loops", "10000",
               "-s", service, "-t", "u1", "-buff_size", "8388608"]
        if calls is not None:
            cmd += ["-m", str(calls)]
        if rate is not None:
            cmd += ["-r", str(rate), "-rp", "1000"]
        cmd += list(extra or [])
        if remote is not None:
            cmd.append(f"{remote[0]}:{remote[1]}")
        self.cmd = cmd
        self.timeout = timeout
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=self.dir, start_new_session=True)

    def wait(self, timeout: float | None = None) -> Result:
        try:
            out, _ = self.proc.communicate(timeout=timeout or self.timeout + 10)
        except subprocess.TimeoutExpired:
            self.kill()
            out, _ = self.proc.communicate()
        return self._result(out.decode(errors="replace"))

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def stop(self) -> Result:
        """Stop a UAS that was started without a call bound."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGUSR1)   # SIPp: quit after the current calls
            try:
                out, _ = self.proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
                out, _ = self.proc.communicate()
        else:
            out, _ = self.proc.communicate()
        return self._result(out.decode(errors="replace"))

    def _result(self, out: str) -> Result:
        succ = fail = retr = 0
        try:
            with open(self.stat, newline="") as f:
                rows = list(csv.reader(f, delimiter=";"))
            head, last = rows[0], rows[-1]
            col = {name: i for i, name in enumerate(head)}
            succ = int(last[col["SuccessfulCall(C)"]])
            fail = int(last[col["FailedCall(C)"]])
            retr = int(last[col["Retransmissions(C)"]])
        except (OSError, IndexError, KeyError, ValueError):
            pass
        shutil.rmtree(self.dir, ignore_errors=True)
        return Result(self.proc.returncode, succ, fail, retr, out[-3000:])
