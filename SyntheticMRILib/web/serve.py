"""Start the web app: the checks a server needs before it binds (the optional packages, the address, ``--data``).

Why 127.0.0.1 by default: the app has no authentication, and anyone who reaches the port drives the session
and can download its results. Serving a department belongs behind a reverse proxy that authenticates
(nginx or Apache with the hospital's login) and terminates TLS.
"""
from __future__ import annotations

import ipaddress
import sys
from typing import Optional, Sequence, TextIO

from ..errors import InputError
from .session import DEFAULT_UPLOAD_MB

__all__ = ["serve", "check_address", "NETWORK_WARNING", "WEB_REQUIREMENT"]

WEB_REQUIREMENT = "SyntheticMRILib[web]"
NETWORK_WARNING = ("warning: serving on {host}: the app has no authentication; anyone who reaches port {port} "
                   "can use it and download its results. Put it behind a reverse proxy that authenticates "
                   "(nginx, Apache) or keep the default --host 127.0.0.1.")


def check_address(host: str, port: int) -> bool:
    """Whether ``host`` reaches beyond this machine (then :data:`NETWORK_WARNING` applies); InputError if the
    port is out of range."""
    if not 0 < port < 65536:
        raise InputError(f"--port {port}: must be between 1 and 65535")
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return True


def serve(port: int = 8080, host: str = "127.0.0.1", data: Optional[str] = None,
          max_upload_mb: float = DEFAULT_UPLOAD_MB, open_browser: bool = False, allow_hosts: Sequence[str] = (),
          err: TextIO = sys.stderr) -> None:
    """Serve the app on ``host:port`` and block until the server stops; the session's files go with it.
    ``allow_hosts``: names besides this machine's loopback ones that requests may address (a reverse proxy's
    public name, forwarded with the browser's Host header); a server on the network answers to any."""
    network = check_address(host, port)
    if network:
        print(NETWORK_WARNING.format(host=host, port=port), file=err, flush=True)
    try:
        from trame.app import get_server

        from .app import LOOPBACK, WebApp
    except ImportError as error:  # the optional group is not installed
        raise InputError(f"the web app needs {error.name or 'trame-slicer'}: pip install '{WEB_REQUIREMENT}'") from None
    from .session import Session

    session = Session(max_upload_mb)
    argv, app = sys.argv, None
    try:
        app = WebApp(get_server("syntheticmri", client_type="vue3"), session=session, data=data,
                     hosts=None if network else (*LOOPBACK, host, *allow_hosts))
        print(f"session files: {session.folder} (removed when the server stops)", file=err, flush=True)
        sys.argv = argv[:1]  # trame reads its own options from sys.argv; ours are parsed already
        app.server.start(port=port, host=host, open_browser=open_browser, timeout=0)
    finally:
        sys.argv = argv
        if app is not None:
            app.stop()  # a running job's process ends before its folder goes
        session.close()
