"""Free TCP ports on 127.0.0.1 for the servers and clusters the tests start."""

import socket


def free_ports(n=1):
    """``n`` distinct ports nothing listens on now (bound together, then released).

    Args:
        n: how many ports.

    Returns:
        A list of ``n`` port numbers.
    """
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()
