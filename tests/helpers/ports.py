"""Servers the tests start on loopback: a free port, and the demo app served on one."""

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serving_demo(model: Path) -> Iterator[str]:
    """The Gradio demo of `model` (ddpm_hf.tools.demo) served in this process; yields its URL."""
    from ddpm_hf.tools.demo import build_demo

    demo = build_demo(str(model))
    port = free_port()
    demo.launch(prevent_thread_lock=True, server_port=port, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()
