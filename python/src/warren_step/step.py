"""The step decorator, the context a step function gets, its errors, and the loop that serves
the runtime (``warren-exec``) over stdin and stdout."""

from __future__ import annotations

import dataclasses
import inspect
import logging
import os
import queue
import signal
import sys
import threading
import traceback
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, Dict, Generic, List, Optional, Sequence, Type, TypeVar, get_type_hints

from . import schema
from .protocol import PROTOCOL, read_frame, write_frame

__all__ = ["Step", "step", "Context", "Artifact", "StepFailure", "Retryable", "Permanent", "run"]

log = logging.getLogger("warren_step")


class StepFailure(Exception):
    """A step's failure; raise :class:`Retryable` or :class:`Permanent`."""

    retryable = False


class Retryable(StepFailure):
    """Worth another attempt (a dependency away, a timeout): the message goes to a delay queue
    and comes back, until its attempts are used up."""

    retryable = True


class Permanent(StepFailure):
    """Will fail however often it is tried (bad data, a refused parameter): the message goes to
    the step's dead-letter queue at once, with this message as its reason."""

    retryable = False


@dataclass(frozen=True)
class Artifact:
    """Where :meth:`Context.write` stored the bytes."""

    uri: str
    hash: str


class _Link:
    """The pipes to the runtime: one writer lock, one reader thread."""

    def __init__(self, inp: BinaryIO, out: BinaryIO) -> None:
        self.inp = inp
        self.out = out
        self.lock = threading.Lock()
        self.calls: "queue.Queue[Optional[Dict[str, Any]]]" = queue.Queue()
        self.answers: "queue.Queue[Dict[str, Any]]" = queue.Queue()
        self.stop = threading.Event()

    def send(self, frame: Dict[str, Any]) -> None:
        with self.lock:
            write_frame(self.out, frame)

    def read_forever(self) -> None:
        try:
            while True:
                frame = read_frame(self.inp)
                if frame is None:
                    break
                kind = frame.get("t")
                if kind == "call":
                    self.calls.put(frame)
                elif kind in ("data", "written", "failed"):
                    self.answers.put(frame)
                elif kind == "stop":
                    break
        except Exception:  # a broken pipe ends the child as a closed one does
            log.exception("reading from the runtime failed")
        finally:
            self.stop.set()
            self.calls.put(None)
            self.answers.put({"t": "closed"})


class Context:
    """What a step function gets besides its parameters and input: who the message is, the
    artifact helpers, reports, the stop flag and a logger."""

    def __init__(self, link: Optional[_Link], call: Dict[str, Any]) -> None:
        self._link = link
        self._id: int = call.get("id", 0)
        self._req = 0
        self.job_id: str = call.get("job_id", "")
        self.message_id: str = call.get("message_id", "")
        self.pipeline: str = call.get("pipeline", "")
        self.step: str = call.get("step", "")
        self.attempt: int = call.get("attempt", 1)
        self.delivery_count: int = call.get("delivery_count", 0)
        self.worker: str = call.get("worker", "")
        self.schema: str = call.get("schema", "")
        self.registry: str = call.get("registry", "")
        self.log = logging.getLogger(f"warren_step.{self.step or 'step'}")

    @property
    def stopped(self) -> bool:
        """True once the worker stops (a stop frame, its stdin closed, or SIGTERM): long work
        checks it and raises :class:`Retryable`, so the message is retried by another worker.
        (A call past the step's maximum duration is not asked: its process is killed.)"""
        link = self._link
        return link is not None and link.stop.is_set()

    def _request(self, frame: Dict[str, Any]) -> Dict[str, Any]:
        if self._link is None:
            raise Retryable("no runtime to ask: this context is detached")
        self._req += 1
        frame.update(id=self._id, req=self._req)
        self._link.send(frame)
        answer = self._link.answers.get()
        if answer.get("t") == "closed":
            raise Retryable("the runtime went away")
        if answer.get("req") != self._req:
            raise Retryable(f"the runtime answered request {answer.get('req')}, not {self._req}")
        if answer["t"] == "failed":
            cls = Retryable if answer.get("retryable") else Permanent
            raise cls(answer.get("message", "failed"))
        return answer

    def read(self, name: str) -> bytes:
        """The bytes of an input: an artifact URI of the workers' store, or ``data:PATH`` in the
        workers' data root. A missing one is a :class:`Permanent` error, a store that does not
        answer a :class:`Retryable` one."""
        return bytes(self._request({"t": "read", "name": name})["data"])

    def read_text(self, name: str, encoding: str = "utf-8") -> str:
        """:meth:`read`, decoded."""
        try:
            return self.read(name).decode(encoding)
        except UnicodeDecodeError as e:
            raise Permanent(f"{name} is not {encoding} text: {e}") from None

    def write(self, name: str, data: bytes) -> Artifact:
        """Stores ``data`` as ``name`` under this job and step (the same key on a retry), in the
        workers' store, and says where."""
        if isinstance(data, str):
            data = data.encode("utf-8")
        answer = self._request({"t": "write", "name": name, "data": bytes(data)})
        return Artifact(uri=answer["uri"], hash=answer["hash"])

    def report(self, detail: Dict[str, Any]) -> None:
        """A ``report`` event in the job's history (``warren status`` shows it)."""
        if self._link is not None:
            self._link.send({"t": "report", "id": self._id, "detail": schema.to_plain(detail)})


P = TypeVar("P")


class Step(Generic[P]):
    """A step function with its description; made by :func:`step`."""

    def __init__(
        self,
        fn: Callable[..., Any],
        name: str,
        version: str,
        input: str,
        output: str,
        about: str,
        params: Optional[Type[P]],
        fan_out: bool,
        file_params: Sequence[str],
        max_duration: Optional[float],
        concurrency: Optional[int],
    ) -> None:
        self.fn = fn
        self.name = name
        self.version = version
        self.input = input
        self.output = output
        self.about = about
        self.params = params
        self.fan_out = fan_out
        self.file_params = list(file_params)
        self.max_duration = max_duration
        self.concurrency = concurrency
        hints = get_type_hints(fn)
        names = list(inspect.signature(fn).parameters)
        self._input_type = hints.get(names[2]) if len(names) > 2 else None
        if self._input_type is not None and not dataclasses.is_dataclass(self._input_type):
            self._input_type = None
        self.__doc__ = fn.__doc__

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def descriptor(self) -> Dict[str, Any]:
        """What the step is, as the runtime announces it in the step registry."""
        d: Dict[str, Any] = {
            "step": self.name,
            "version": self.version,
            "about": self.about,
            "input": self.input,
            "output": self.output,
            "fan_out": self.fan_out,
            "gather": False,
            "params": schema.schema_of(self.params) if self.params is not None else {"type": "object"},
            "file_params": self.file_params,
        }
        if self._input_type is not None:
            d["input_schema"] = schema.schema_of(self._input_type)
        if self.max_duration is not None:
            d["max_duration_ms"] = int(self.max_duration * 1000)
        if self.concurrency is not None:
            d["concurrency"] = self.concurrency
        return d

    def handle(self, ctx: Context, params: Any, payload: Any) -> List[Any]:
        """One call: parameters and input decoded, the function run, its outputs as plain
        values. Raises :class:`StepFailure`."""
        try:
            decoded = schema.decode(self.params, params) if self.params is not None else params
        except schema.DecodeError as e:
            raise Permanent(f"bad parameters for step {self.name}: {e}") from None
        if self._input_type is not None:
            try:
                payload = schema.decode(self._input_type, payload, "input", strict=False)
            except schema.DecodeError as e:
                raise Permanent(f"the input is not a {self.input}: {e}") from None
        result = self.fn(ctx, decoded, payload)
        outputs = list(result) if self.fan_out else [result]
        return [schema.to_plain(o) for o in outputs]


def step(
    name: str,
    *,
    version: str = "1",
    input: str = "*",
    output: str = "*",
    about: str = "",
    params: Optional[type] = None,
    fan_out: bool = False,
    file_params: Sequence[str] = (),
    max_duration: Optional[float] = None,
    concurrency: Optional[int] = None,
) -> Callable[[Callable[..., Any]], Step[Any]]:
    """Makes ``fn(ctx, params, input) -> output`` a Warren step.

    ``params`` is a dataclass: its JSON Schema (from the type hints and defaults) is announced,
    so ``warren submit`` checks a spec against it, and each call gets an instance. ``input``
    and ``output`` are schema ids (``textstats.Document/1``); an input annotated with a
    dataclass is decoded into it, an output dataclass is sent as a map. ``fan_out=True``: the
    function returns a list, each item its own message. ``max_duration`` (seconds) bounds one
    call; ``file_params`` name parameters that ``warren submit`` uploads.
    """

    def wrap(fn: Callable[..., Any]) -> Step[Any]:
        about_line = about or (fn.__doc__ or "").strip().split("\n")[0]
        return Step(fn, name, version, input, output, about_line, params, fan_out, file_params, max_duration, concurrency)

    return wrap


class _LogFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record).replace("\n", " | ")
        return f"{record.levelname} {record.name}: {text}"


def _serve(s: Step[Any], link: _Link) -> int:
    link.send({"t": "hello", "protocol": PROTOCOL, "descriptor": s.descriptor()})
    reader = threading.Thread(target=link.read_forever, name="warren-exec-reader", daemon=True)
    reader.start()
    while True:
        call = link.calls.get()
        if call is None:
            return 0
        ctx = Context(link, call)
        try:
            outputs = s.handle(ctx, call.get("params"), call.get("input"))
            link.send({"t": "ok", "id": ctx._id, "outputs": outputs})
        except StepFailure as e:
            link.send({"t": "error", "id": ctx._id, "retryable": e.retryable, "message": str(e) or type(e).__name__})
        except Exception as e:  # a bug in the step: dead-lettered with its type and line, replayable
            tb = traceback.extract_tb(e.__traceback__)
            where = f" at {tb[-1].filename}:{tb[-1].lineno}" if tb else ""
            ctx.log.error("step %s failed: %s", s.name, "".join(traceback.format_exception(type(e), e, e.__traceback__)))
            link.send({"t": "error", "id": ctx._id, "retryable": False, "message": f"{type(e).__name__}: {e}{where}"})


def run(s: Step[Any], argv: Optional[Sequence[str]] = None) -> None:
    """Serves the runtime: call this from the step program's ``if __name__ == "__main__"``.

    ``--describe`` prints the descriptor as JSON and exits. Otherwise stdin and stdout carry the
    exec protocol, so whatever the step prints goes to stderr, into the worker's log."""
    import json

    argv = list(sys.argv[1:] if argv is None else argv)
    if "--describe" in argv:
        print(json.dumps(s.descriptor(), indent=2))
        return
    # Frames go to the real stdout; print() and C libraries write to stderr from now on.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    inp = os.fdopen(os.dup(0), "rb")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LogFormatter("%(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    if root.level == logging.WARNING:
        root.setLevel(logging.INFO)
    link = _Link(inp, out)
    # The runtime decides when a child stops: Ctrl-C in the worker's terminal is the worker's;
    # SIGTERM sets the stop flag (the call in hand may finish).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: link.stop.set())
    sys.exit(_serve(s, link))
