"""The package speaking the exec protocol, as warren-exec drives it: a real child process
on pipes."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest

from warren_step.protocol import PROTOCOL, read_frame, write_frame

STEP = textwrap.dedent(
    '''
    import time
    from dataclasses import dataclass
    import warren_step as ws

    @dataclass
    class Params:
        factor: int = 2
        fail: str = ""

    @dataclass
    class Numbers:
        values: list

    @ws.step("double", version="3", input="test.Numbers/1", output="test.Numbers/1", params=Params, max_duration=5)
    def double(ctx: ws.Context, params: Params, numbers: Numbers) -> dict:
        """Multiplies numbers."""
        print("this goes to stderr, not into the protocol")
        if params.fail == "permanent":
            raise ws.Permanent("refused on purpose")
        if params.fail == "retryable":
            raise ws.Retryable("later, please")
        if params.fail == "bug":
            return 1 / 0
        if params.fail == "io":
            data = ctx.read("data:in.txt")
            art = ctx.write("out.txt", data.upper())
            ctx.report({"stored": art.uri})
            return {"values": [len(data)], "uri": art.uri}
        if params.fail == "wait":
            while not ctx.stopped:
                time.sleep(0.01)
            raise ws.Retryable("stopped")
        return {"values": [v * params.factor for v in numbers.values]}

    if __name__ == "__main__":
        ws.run(double)
    '''
)


@pytest.fixture()
def child(tmp_path: Path) -> Iterator["subprocess.Popen[bytes]"]:
    script = tmp_path / "double.py"
    script.write_text(STEP)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    yield proc
    proc.kill()
    proc.wait()


def call(id: int, params: Dict[str, Any], values: Any) -> Dict[str, Any]:
    return {
        "t": "call", "id": id, "job_id": "j", "message_id": "m", "pipeline": "p", "step": "double",
        "attempt": 1, "delivery_count": 0, "worker": "w", "params": params,
        "input": {"values": values}, "schema": "test.Numbers/1", "registry": "ns",
    }


def test_hello_describes_the_step(child: "subprocess.Popen[bytes]") -> None:
    hello = read_frame(child.stdout)
    assert hello is not None and hello["t"] == "hello" and hello["protocol"] == PROTOCOL
    d = hello["descriptor"]
    assert (d["step"], d["version"], d["input"], d["output"]) == ("double", "3", "test.Numbers/1", "test.Numbers/1")
    assert d["params"]["properties"]["factor"] == {"type": "integer", "default": 2}
    assert d["max_duration_ms"] == 5000 and d["about"] == "Multiplies numbers."
    assert d["input_schema"]["required"] == ["values"]


def test_calls_answer_outputs_and_typed_errors(child: "subprocess.Popen[bytes]") -> None:
    assert read_frame(child.stdout)["t"] == "hello"
    write_frame(child.stdin, call(1, {"factor": 3}, [1, 2]))
    assert read_frame(child.stdout) == {"t": "ok", "id": 1, "outputs": [{"values": [3, 6]}]}
    write_frame(child.stdin, call(2, {"fail": "permanent"}, []))
    assert read_frame(child.stdout) == {"t": "error", "id": 2, "retryable": False, "message": "refused on purpose"}
    write_frame(child.stdin, call(3, {"fail": "retryable"}, []))
    assert read_frame(child.stdout)["retryable"] is True
    write_frame(child.stdin, call(4, {"factor": "x"}, []))
    bad = read_frame(child.stdout)
    assert bad["retryable"] is False and "factor: expected an integer" in bad["message"]
    write_frame(child.stdin, call(5, {"fail": "bug"}, []))
    bug = read_frame(child.stdout)
    assert bug["retryable"] is False and bug["message"].startswith("ZeroDivisionError") and "double.py" in bug["message"]
    write_frame(child.stdin, call(6, {}, "not a list"))
    assert read_frame(child.stdout)["id"] == 6, "the child lives on after each error"
    write_frame(child.stdin, {"t": "stop"})
    assert child.wait(timeout=10) == 0
    assert b"this goes to stderr" in child.stderr.read()


def test_reads_and_writes_go_through_the_runtime(child: "subprocess.Popen[bytes]") -> None:
    read_frame(child.stdout)
    write_frame(child.stdin, call(1, {"fail": "io"}, []))
    req = read_frame(child.stdout)
    assert req == {"t": "read", "id": 1, "req": 1, "name": "data:in.txt"}
    write_frame(child.stdin, {"t": "data", "req": 1, "data": b"abc"})
    req = read_frame(child.stdout)
    assert req["t"] == "write" and req["name"] == "out.txt" and req["data"] == b"ABC"
    write_frame(child.stdin, {"t": "written", "req": 2, "uri": "file:///s/out.txt", "hash": "sha256:00"})
    assert read_frame(child.stdout) == {"t": "report", "id": 1, "detail": {"stored": "file:///s/out.txt"}}
    assert read_frame(child.stdout) == {"t": "ok", "id": 1, "outputs": [{"values": [3], "uri": "file:///s/out.txt"}]}
    write_frame(child.stdin, call(2, {"fail": "io"}, []))
    read_frame(child.stdout)
    write_frame(child.stdin, {"t": "failed", "req": 1, "retryable": False, "message": "no such file"})
    assert read_frame(child.stdout) == {"t": "error", "id": 2, "retryable": False, "message": "no such file"}


def test_a_stop_sets_the_stop_flag_and_the_call_in_hand_still_answers(child: "subprocess.Popen[bytes]") -> None:
    read_frame(child.stdout)
    write_frame(child.stdin, call(1, {"fail": "wait"}, []))
    write_frame(child.stdin, {"t": "stop"})
    assert read_frame(child.stdout) == {"t": "error", "id": 1, "retryable": True, "message": "stopped"}
    assert child.wait(timeout=10) == 0


def test_a_closed_stdin_ends_the_child(child: "subprocess.Popen[bytes]") -> None:
    read_frame(child.stdout)
    child.stdin.close()
    assert child.wait(timeout=10) == 0
