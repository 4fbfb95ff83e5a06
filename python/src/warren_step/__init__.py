"""Warren steps in Python.

A step is a function ``(ctx, params, input) -> output`` made a step by :func:`step`, run by
Warren's ``warren-exec`` worker (``warren-exec -- python3 my_step.py``), which keeps every
guarantee of a Rust step: confirmed hand-offs, dedup, retries through delay queues, dead
letters with reasons, crash counting, graceful stop, events and metrics. See the README.
"""

from .schema import DecodeError, decode, schema_of
from .step import Artifact, Context, Permanent, Retryable, Step, StepFailure, run, step

__all__ = [
    "Artifact",
    "Context",
    "DecodeError",
    "Permanent",
    "Retryable",
    "Step",
    "StepFailure",
    "decode",
    "run",
    "schema_of",
    "step",
]
__version__ = "0.1.0"
