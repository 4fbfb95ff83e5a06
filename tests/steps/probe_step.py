"""The Python twin of `warren-test-step`: passes its probe on, or fails, stalls, hangs or dies
as its parameters on the routing slip say. The e2e tests and the conformance kit
(`warren-chaos --exec -- python3 tests/steps/probe_step.py`) run it under warren-exec; its step
name is the `--step` warren-exec was given (WARREN_STEP)."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from typing import List, Optional

import warren_step as ws


@dataclass
class Behaviour:
    """What the step does to a probe (the fields of warren_e2e::Behaviour, and two more)."""

    fail_times: int = 0
    permanent_on: Optional[int] = None
    abort_on: Optional[int] = None
    sleep_ms: int = 0
    fan_out: int = 0
    hang_attempts: int = 0
    slow_on: Optional[int] = None


@dataclass
class Probe:
    seq: int
    hops: int


@ws.step(
    os.environ.get("WARREN_STEP", "probe"),
    version="1",
    input="warren.test.Probe/1",
    output="warren.test.Probe/1",
    params=Behaviour,
    fan_out=True,
)
def probe(ctx: ws.Context, b: Behaviour, p: Probe) -> List[Probe]:
    """Passes a probe on, or misbehaves on purpose."""
    if b.abort_on == p.seq:
        ctx.log.warning("dying on probe %d as asked", p.seq)
        os.kill(os.getpid(), signal.SIGKILL)
    if b.permanent_on == p.seq:
        raise ws.Permanent(f"probe {p.seq} is refused on purpose")
    if ctx.attempt <= b.fail_times:
        raise ws.Retryable(f"transient failure {ctx.attempt} of {b.fail_times}")
    if ctx.attempt <= b.hang_attempts:
        ctx.log.warning("hanging on probe %d (attempt %d), ignoring the stop flag", p.seq, ctx.attempt)
        while True:
            time.sleep(1)
    if b.slow_on == p.seq and ctx.attempt == 1:
        ctx.log.warning("slow on probe %d: %d ms", p.seq, b.sleep_ms)
        time.sleep(b.sleep_ms / 1000)
    elif b.sleep_ms and b.slow_on is None:
        time.sleep(b.sleep_ms / 1000)
    return [Probe(p.seq, p.hops + 1)] * max(b.fan_out, 1)


if __name__ == "__main__":
    ws.run(probe)
