"""Sending one request: urllib3 (the HTTP library botocore ships with), with a deadline over the whole call.

urllib3 is imported when the first request is sent, so that importing the client, and the CLI's
``--help``, stay fast.
"""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
from contextlib import suppress
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from lambda_ml_serve.client.errors import ClientConfigError, FunctionUrlConnectionError

if TYPE_CHECKING:
    import urllib3


class _Deadline:
    """When the current call must end, and whether the watchdog ended it (the socket then reads as EOF)."""

    __slots__ = ("at", "expired")

    def __init__(self, at: float) -> None:
        self.at, self.expired = at, False


_deadline: ContextVar[_Deadline] = ContextVar("deadline")


def _pool_manager(proxy: str | None) -> urllib3.PoolManager:
    """A urllib3 pool manager whose connections are shut down when the current call's deadline passes.

    urllib3's own timeouts bound each socket operation, so a server trickling a byte at a time could
    hold a call forever; a timer that shuts the socket down makes ``timeout`` a deadline.
    """
    import urllib3
    from botocore.httpsession import get_cert_path
    from urllib3.connection import HTTPConnection, HTTPSConnection

    class Deadline:
        def request(self, *args: Any, **kwargs: Any) -> None:
            self._state = _deadline.get()
            self._watchdog = threading.Timer(max(0.0, self._state.at - time.monotonic()), self._expire)
            self._watchdog.daemon = True
            self._watchdog.start()
            try:
                super().request(*args, **kwargs)
            except BaseException:
                self._watchdog.cancel()
                raise

        def getresponse(self) -> Any:
            try:
                return super().getresponse()  # reads the whole body: preload_content
            finally:
                self._watchdog.cancel()

        def _expire(self) -> None:
            self._state.expired = True
            if self.sock is not None:
                with suppress(OSError):
                    self.sock.shutdown(socket.SHUT_RDWR)

    class Http(urllib3.HTTPConnectionPool):
        ConnectionCls = type("DeadlineHTTPConnection", (Deadline, HTTPConnection), {})

    class Https(urllib3.HTTPSConnectionPool):
        ConnectionCls = type("DeadlineHTTPSConnection", (Deadline, HTTPSConnection), {})

    options = {"retries": False, "ca_certs": get_cert_path(True)}
    manager = urllib3.ProxyManager(proxy, **options) if proxy else urllib3.PoolManager(**options)
    manager.pool_classes_by_scheme = {"http": Http, "https": Https}
    return manager


def _proxy_for(url: str) -> str | None:
    host = urlsplit(url).hostname or ""
    # A proxy cannot reach this machine's loopback interface: never use one for it.
    if host in ("localhost", "::1") or host.startswith("127.") or urllib.request.proxy_bypass(host):
        return None
    return urllib.request.getproxies().get(urlsplit(url).scheme)


def _reason(exc: BaseException) -> str:
    # urllib3 wraps the OSError that says what happened (refused, reset...) in its own exceptions.
    while exc.__context__ is not None and not isinstance(exc, OSError):
        exc = exc.__context__
    return (exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)) or type(exc).__name__


class Transport:
    """Sends requests to one URL through a pool made on first use; a call fails at its deadline."""

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url
        self.timeout = timeout
        self._http: urllib3.PoolManager | None = None

    def send(self, method: str, body: bytes, headers: dict[str, str], deadline: float) -> urllib3.BaseHTTPResponse:
        """Send one request and read the whole answer; redirects are returned, not followed."""
        try:
            import urllib3

            if self._http is None:
                self._http = _pool_manager(_proxy_for(self.url))
        except ImportError:
            raise ClientConfigError(
                "the client sends with botocore's urllib3: pip install 'lambda-ml-serve[cli]'"
            ) from None
        remaining = deadline - time.monotonic()
        state = _Deadline(deadline)
        token = _deadline.set(state)
        reason = f"no answer within {self.timeout:g}s (raise the timeout if the model is slow)"
        try:
            # Redirects are reported, not followed: that would send the signature to another URL.
            response = self._http.urlopen(
                method,
                self.url,
                body=body or None,
                headers=headers,
                redirect=False,
                timeout=urllib3.Timeout(connect=remaining, read=remaining),
            )
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            # NewConnectionError subclasses ConnectTimeoutError in urllib3, yet means refused or unresolvable.
            slow = isinstance(exc, urllib3.exceptions.TimeoutError)
            timed_out = (
                state.expired
                or time.monotonic() >= deadline
                or (slow and not isinstance(exc, urllib3.exceptions.NewConnectionError))
            )
            raise FunctionUrlConnectionError(self.url, reason if timed_out else _reason(exc)) from None
        finally:
            _deadline.reset(token)
        if state.expired:
            # The watchdog shut the socket while a body without a length was read: what came is not the answer.
            raise FunctionUrlConnectionError(self.url, reason)
        return response
