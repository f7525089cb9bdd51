"""What every router of the service shares: API-key checks and the served `Service`.

    need("read" | "write" | "admin")   a dependency: 401 without a valid key, 403 for a key
                                       without the role (reads are open unless read keys
                                       are configured)
    Svc                                the request's Service (following other workers' reloads)
    PathId, K                          a user or item id in the path; a count of items

Routers outside `lmrec.serve.app` (the catalogue, the dashboard) import these, so that one
rule decides who may do what.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi import Path as PathParam
from fastapi import Query as QueryParam
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from lmrec.serve import schemas as S
from lmrec.serve.security import KeyRing, Role
from lmrec.serve.service import Service

_bearer = HTTPBearer(auto_error=False, description="an API key: Authorization: Bearer KEY")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def need(role: Role) -> Callable[..., None]:
    """A dependency refusing requests without a key that holds `role` (401, or 403 for a
    known key without it). Reads are open unless read keys are configured."""

    def check(request: Request, creds: Credentials) -> None:
        keys: KeyRing = request.app.state.keys
        if role == "read" and not keys.reads_need_key:
            return
        key = creds.credentials if creds is not None else None
        if keys.allows(key, role):
            return
        if keys.knows(key):
            raise HTTPException(403, f"this key may not {role}")
        raise HTTPException(401, "a valid API key is needed (Authorization: Bearer KEY)",
                            headers={"WWW-Authenticate": "Bearer"})

    return check


def current_service(request: Request) -> Service:
    service: Service = request.app.state.service
    service.follow()
    return service


Svc = Annotated[Service, Depends(current_service)]
PathId = Annotated[S.PathIdText, PathParam(min_length=1, max_length=S.MAX_ID_LENGTH,
                                          pattern=S.TEXT_PATTERN)]  # a user or item id
K = Annotated[int, QueryParam(ge=1, le=S.MAX_K, description="how many items")]
