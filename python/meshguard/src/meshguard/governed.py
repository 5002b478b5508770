"""``@governed``: put a function under MeshGuard without passing a client around."""

from __future__ import annotations

import functools
import inspect
import threading
from typing import Any, Callable, Mapping, Optional, TypeVar, cast

from .client import GovernedContext, MeshGuardClient

F = TypeVar("F", bound=Callable[..., Any])

_default_client: Optional[MeshGuardClient] = None
_default_lock = threading.Lock()


def default_client() -> MeshGuardClient:
    """The client ``@governed`` uses when none is given, configured from the environment.

    Created on first use, not at import, so that importing a governed module never needs a token.
    """
    global _default_client
    with _default_lock:
        if _default_client is None:
            _default_client = MeshGuardClient()
        return _default_client


def governed(
    action: str,
    resource: Optional[str] = None,
    *,
    resource_arg: Optional[str] = None,
    context: Optional[Mapping[str, Any]] = None,
    client: Optional[MeshGuardClient] = None,
    approval_wait: Optional[float] = None,
) -> Callable[[F], F]:
    """Checks ``action`` before every call of the decorated function and records the outcome.

    The resource is ``resource``, or the value of the argument named ``resource_arg`` (given by
    keyword or by position). A denial raises ``PolicyDeniedError`` and the function does not run.
    """

    def decorate(func: F) -> F:
        signature = inspect.signature(func)

        @functools.wraps(func)
        def governed_call(*args: Any, **kwargs: Any) -> Any:
            target = resource
            if resource_arg is not None:
                bound = signature.bind_partial(*args, **kwargs)
                if resource_arg in bound.arguments:
                    target = str(bound.arguments[resource_arg])
            block = GovernedContext(
                client or default_client(), action, target, context, approval_wait=approval_wait
            )
            return block.run(func, *args, **kwargs)

        return cast(F, governed_call)

    return decorate
