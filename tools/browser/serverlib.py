"""What the browser-side checks of `sluice serve` need: a free loopback port, waiting for /ready, and a
throwaway database on the queue tests' PostgreSQL server ($SLUICE_TEST_POSTGRES) for `serve --queue`."""
import os
import socket
import subprocess
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


def queue_server():
    """$SLUICE_TEST_POSTGRES, or None (then the queue checks skip; with CI=true that is an error)."""
    url = os.environ.get("SLUICE_TEST_POSTGRES")
    if not url:
        assert os.environ.get("CI") != "true", "CI=true but SLUICE_TEST_POSTGRES is not set (.ci/run starts a cluster)"
    return url


def create_database(server_url, prefix):
    """A fresh database on the server; returns (its URL, its name) for drop_database."""
    name = prefix + os.urandom(6).hex()
    subprocess.run(["psql", server_url, "-qc", f"CREATE DATABASE {name}"], check=True)
    return server_url.rsplit("/", 1)[0] + "/" + name, name


def drop_database(server_url, name):
    subprocess.run(["psql", server_url, "-qc", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"], check=False)
