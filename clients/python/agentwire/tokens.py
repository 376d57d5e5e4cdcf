"""HS256 user tokens for a backend that holds agentwire's JWT secret (standard
library only). The server needs ``sub`` (the user id) and ``exp``.

>>> token = make_token(secret, "u1", ttl=3600)     # doctest: +SKIP
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any, Optional, Union

__all__ = ["make_token"]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def make_token(secret: Union[str, bytes], user_id: str, *, ttl: float = 3600,
               now: Optional[float] = None, **claims: Any) -> str:
    """A JWT for ``user_id`` signed with HS256: ``{"sub": user_id, "iat", "exp": now + ttl, **claims}``.

    Give it to the user's browser or app (never the API key). ``claims`` may add
    ``iss``, ``aud``, ``nbf``, … when the server checks them.
    """
    if not isinstance(user_id, str) or not user_id:
        raise ValueError("user_id must be a non-empty string")
    key = secret.encode() if isinstance(secret, str) else secret
    issued = int(time.time() if now is None else now)
    body = {"sub": user_id, "iat": issued, "exp": issued + int(ttl), **claims}
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    payload = _b64(json.dumps(body, separators=(",", ":")).encode())
    signing_input = f"{head}.{payload}".encode("ascii")
    sig = _b64(hmac.new(key, signing_input, hashlib.sha256).digest())
    return f"{head}.{payload}.{sig}"
