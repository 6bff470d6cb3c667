"""Optional bearer-token check for every RPC except the health service.

Clients send `authorization: Bearer <token>` metadata (RFC 6750 section 2.1);
a missing or wrong token gives UNAUTHENTICATED. Tokens are compared in
constant time: both sides are hashed to fixed-length SHA-256 digests and the
digests compared with `hmac.compare_digest`, so neither the token's content
nor its length shows in the timing.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path
from typing import Any, Awaitable, Callable

import grpc

HEALTH_PREFIX = "/grpc.health.v1.Health/"


def load_token(token_file: str | None) -> str | None:
    """The token from `token_file` (first line, stripped) or `$HF_BRIDGE_AUTH_TOKEN`; None when neither is set."""
    if token_file:
        text = Path(token_file).expanduser().read_text(encoding="utf-8").strip()
        if not text:
            raise ValueError(f"auth token file {token_file} is empty")
        return text.splitlines()[0].strip()
    env = os.environ.get("HF_BRIDGE_AUTH_TOKEN", "").strip()
    return env or None


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


def token_matches(got: bytes | str, token: str) -> bool:
    """Whether `got` equals `Bearer <token>`, compared in constant time."""
    raw = got.encode() if isinstance(got, str) else got
    return hmac.compare_digest(_digest(raw), _digest(f"Bearer {token}".encode()))


class BearerAuth(grpc.aio.ServerInterceptor):
    """Reject calls whose `authorization` metadata is not `Bearer <token>`."""

    def __init__(self, token: str) -> None:
        self._expected = _digest(f"Bearer {token}".encode())

        async def deny(request: Any, context: grpc.aio.ServicerContext) -> None:
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "missing or wrong bearer token: send metadata 'authorization: Bearer <token>'",
            )

        self._deny = grpc.unary_unary_rpc_method_handler(deny)

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], details: grpc.HandlerCallDetails
    ) -> Any:
        """Pass authorised calls (and health checks) on; answer the rest with UNAUTHENTICATED."""
        if details.method.startswith(HEALTH_PREFIX):
            return await continuation(details)
        for key, value in details.invocation_metadata or ():
            if key == "authorization":
                got = value.encode() if isinstance(value, str) else value
                if hmac.compare_digest(_digest(got), self._expected):
                    return await continuation(details)
        return self._deny
