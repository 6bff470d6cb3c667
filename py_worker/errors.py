"""Error values of hf_bridge: every failure carries a gRPC status code and a message.

`BridgeError` travels unchanged from the worker processes to the gRPC front,
which turns it into the call's status. `from_exception` maps exceptions raised
by `datasets`, `huggingface_hub` and `pyarrow` to the closest status code.
"""

from __future__ import annotations

import grpc


class BridgeError(Exception):
    """A failure with a gRPC status code and an actionable, human-readable message."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message

    def __reduce__(self) -> tuple:  # keeps subclass and code across pickling
        return (_rebuild, (self.code.name, self.message))

    def __str__(self) -> str:
        return self.message


class NotFound(BridgeError):
    """A dataset, split, config, session or resume token does not exist."""

    code = grpc.StatusCode.NOT_FOUND


class InvalidArgument(BridgeError):
    """A request field is malformed or names something the dataset lacks."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class PermissionDenied(BridgeError):
    """A local path lies outside the configured roots."""

    code = grpc.StatusCode.PERMISSION_DENIED


class FailedPrecondition(BridgeError):
    """The request is valid but the system is not in a state to serve it."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(BridgeError):
    """A configured limit was reached."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(BridgeError):
    """A dependency (the Hub, a worker) cannot be reached right now; retry later."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(BridgeError):
    """An operation ran past its deadline."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unauthenticated(BridgeError):
    """Credentials are missing or rejected."""

    code = grpc.StatusCode.UNAUTHENTICATED


class Internal(BridgeError):
    """An unexpected failure inside hf_bridge."""

    code = grpc.StatusCode.INTERNAL


_BY_CODE: dict[str, type[BridgeError]] = {
    cls.code.name: cls
    for cls in (
        NotFound,
        InvalidArgument,
        PermissionDenied,
        FailedPrecondition,
        ResourceExhausted,
        Unavailable,
        DeadlineExceeded,
        Unauthenticated,
        Internal,
    )
}


def _rebuild(code_name: str, message: str) -> BridgeError:
    return error_for(code_name, message)


def error_for(code_name: str, message: str) -> BridgeError:
    """Build the `BridgeError` subclass for a status code name such as "NOT_FOUND"."""
    cls = _BY_CODE.get(code_name)
    if cls is not None:
        return cls(message)
    return BridgeError(message, getattr(grpc.StatusCode, code_name, grpc.StatusCode.UNKNOWN))


def from_exception(exc: BaseException, context: str = "") -> BridgeError:
    """Map an exception from `datasets`, `huggingface_hub`, `pyarrow` or the OS to a `BridgeError`.

    `context` (for example "opening dataset 'x'") prefixes the message.
    """
    if isinstance(exc, BridgeError):
        return exc
    prefix = f"{context}: " if context else ""
    text = str(exc).strip() or type(exc).__name__
    name = type(exc).__name__
    msg = prefix + text

    if name in ("DatasetNotFoundError", "RepositoryNotFoundError", "EntryNotFoundError", "RevisionNotFoundError"):
        return NotFound(msg)
    if name in ("GatedRepoError",) or "401" in text and "Unauthorized" in text:
        return Unauthenticated(msg + " (set HF_TOKEN to a token with access)")
    if name == "OfflineModeIsEnabled" or "OfflineModeIsEnabled" in text:
        return NotFound(msg + " (the Hub is offline: HF_HUB_OFFLINE=1; only local paths under the data roots work)")
    if isinstance(exc, (ConnectionError, TimeoutError)) or name in ("ConnectTimeout", "ReadTimeout", "HfHubHTTPError"):
        return Unavailable(msg + " (the Hugging Face Hub could not be reached)")
    if isinstance(exc, FileNotFoundError):
        return NotFound(msg)
    if isinstance(exc, PermissionError):
        return PermissionDenied(msg)
    if "Dataset scripts are no longer supported" in text or "trust_remote_code" in text:
        return FailedPrecondition(
            prefix + "this dataset needs a loading script (remote code), which hf_bridge never runs; "
            "use a dataset with data files (Parquet/JSON/CSV) instead"
        )
    if isinstance(exc, ValueError):
        if text.startswith("Bad split") or "Unknown split" in text or "Instruction" in text and "split" in text:
            return NotFound(msg)
        if "BuilderConfig" in text and "not found" in text:
            return NotFound(msg)
        if "At least one valid data file must be specified" in text or "At least one data file" in text:
            return NotFound(prefix + "no data files matched: " + text)
        return InvalidArgument(msg)
    if isinstance(exc, (KeyError, TypeError, IndexError)):
        return InvalidArgument(msg)
    try:
        import pyarrow as pa

        if isinstance(exc, pa.ArrowInvalid):
            return InvalidArgument(msg)
        if isinstance(exc, pa.ArrowNotImplementedError):
            return InvalidArgument(msg)
        if isinstance(exc, pa.ArrowMemoryError):
            return ResourceExhausted(msg)
    except ImportError:  # pragma: no cover - pyarrow is a hard dependency
        pass
    if isinstance(exc, MemoryError):
        return ResourceExhausted(prefix + "out of memory")
    if isinstance(exc, RuntimeError) and "Couldn't" in text:
        return Unavailable(msg)
    return Internal(f"{prefix}{name}: {text}")
