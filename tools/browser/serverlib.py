"""What both browser-side checks of `sluice serve` need: a free loopback port, and waiting for /ready."""
import socket
import time
import urllib.request


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_ready(base, timeout=60):
    """Returns once GET /ready answers 200 (503 while loading); exits the script after `timeout` s."""
    end = time.time() + timeout
    while time.time() < end:
        try:
            with urllib.request.urlopen(base + "/ready", timeout=2) as r:
                if r.status == 200:
                    return
        except Exception:
            pass
        time.sleep(0.2)
    raise SystemExit("server never became ready")
