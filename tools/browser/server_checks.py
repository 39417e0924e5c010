"""Three checks of `sluice serve` from outside, on loopback, each bounded in time:

1. Load: 200 concurrent GET /api/status and 50 jobs submitted at once to a queue of 16. No request
   fails with anything but 429 for a full queue, every accepted job completes, and the server's
   resident memory after the burst stays within 1.5× + 256 MiB of what it was before.
2. Crash: kill -9 during a generation, start again on the same gallery: every listed image is a whole
   PNG with its parameters, and no temp file is left.
3. Slow body: a client that announces 1000 bytes and sends 10 gets 408 within the body timeout and
   its connection closed, while others are served; the access log has a line per request and no
   prompt.
4. Queue load (when $SLUICE_TEST_POSTGRES names a PostgreSQL server; required with CI=true): a front
   server (`serve --queue`, depth 16) and two `sluice worker`s. 50 jobs at once before any worker runs:
   exactly 16 accepted, 34 refused with 429; then the workers start, and once those are done 50 more
   arrive while they run: only 202 or 429, at least 16 accepted. Every accepted job ends done through the front server with its image in the
   front's gallery, and the front server's resident memory stays within 1.5× + 256 MiB.

Run from the repository root after a release build:  python3 tools/browser/server_checks.py [sluice]
"""
import concurrent.futures as cf
import glob
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

from serverlib import create_database, drop_database, free_port, queue_server, wait_ready

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MODEL = os.path.join(ROOT, "Tests/Fixtures/models/z-image-tiny")


def request(base, path, body=None, timeout=120):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method="POST" if data else "GET",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def start(binary, gallery, port, extra=(), log=None, per_client=16):
    out = open(log, "w") if log else subprocess.DEVNULL
    p = subprocess.Popen([binary, "serve", "--model", MODEL, "--port", str(port), "--gallery", gallery, "--queue-size", "16",
                          "--max-jobs-per-client", str(per_client), *extra], stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base)
    except SystemExit:
        p.kill()
        raise
    return p, base


def wait_done(base, ids, seconds):
    end = time.time() + seconds
    for jid in ids:
        while True:
            state = request(base, f"/api/jobs/{jid}")[1]["state"]
            if state in ("done", "failed", "cancelled"):
                assert state == "done", (jid, state)
                break
            assert time.time() < end, "jobs did not finish in time"
            time.sleep(0.1)


def load_check(binary):
    gallery = tempfile.mkdtemp(prefix="sluice-load-")
    server, base = start(binary, gallery, free_port())
    try:
        before = request(base, "/api/status")[1]["memory_now"]["host_bytes"]
        with cf.ThreadPoolExecutor(max_workers=64) as pool:
            statuses = list(pool.map(lambda _: request(base, "/api/status")[0], range(200)))
            jobs = list(pool.map(lambda i: request(base, "/api/jobs", {"prompt": f"fox {i}", "width": 64, "height": 64, "steps": 4, "seed": i}),
                                 range(50)))
        assert all(s == 200 for s in statuses), statuses
        accepted = [j[1]["id"] for j in jobs if j[0] == 202]
        rejected = [j for j in jobs if j[0] == 429]
        assert len(accepted) + len(rejected) == 50, [j[0] for j in jobs]
        assert 1 <= len(accepted) <= 16, len(accepted)
        wait_done(base, accepted, 120)
        after = request(base, "/api/status")[1]["memory_now"]["host_bytes"]
        assert after <= before * 1.5 + (256 << 20), (before, after)
        assert server.poll() is None, "server exited"
        print(f"load: 200 status requests OK; {len(accepted)} jobs done, {len(rejected)} refused with 429; "
              f"RSS {before >> 20} → {after >> 20} MiB")
    finally:
        server.terminate()
        server.wait(10)


def crash_check(binary):
    gallery = tempfile.mkdtemp(prefix="sluice-crash-")
    port = free_port()
    server, base = start(binary, gallery, port)
    # Some finished images first, then a long one to kill in the middle of.
    for i in range(3):
        request(base, "/sdapi/v1/txt2img", {"prompt": f"done {i}", "width": 64, "height": 64, "steps": 2})
    status, job = request(base, "/api/jobs", {"prompt": "killed", "width": 512, "height": 512, "steps": 40})
    assert status == 202, job
    end = time.time() + 60
    while request(base, f"/api/jobs/{job['id']}")[1]["state"] != "running":
        assert time.time() < end
        time.sleep(0.05)
    time.sleep(0.3)
    os.kill(server.pid, signal.SIGKILL)
    server.wait()
    server, base = start(binary, gallery, port)
    try:
        listed = request(base, "/api/gallery?per_page=100")[1]
        assert listed["total"] == 3, listed["total"]
        from PIL import Image
        for item in listed["items"]:
            png = os.path.join(gallery, item["id"] + ".png")
            with Image.open(png) as im:
                im.load()
                assert im.size == (64, 64) and "parameters" in im.info
        assert not glob.glob(os.path.join(gallery, ".*.tmp")), "temp files left"
        print("crash: after kill -9 mid-generation and a restart, the gallery holds 3 whole images and no temp file")
    finally:
        server.terminate()
        server.wait(10)


def slow_body_check(binary):
    gallery = tempfile.mkdtemp(prefix="sluice-slow-")
    log = os.path.join(gallery, "server.log")
    port = free_port()
    server, base = start(binary, gallery, port, extra=("--body-timeout", "2"), log=log)
    try:
        secret = "a secret prompt about foxes"
        assert request(base, "/sdapi/v1/txt2img", {"prompt": secret, "width": 64, "height": 64, "steps": 1})[0] == 200
        s = socket.create_connection(("127.0.0.1", port))
        s.settimeout(15)
        t0 = time.time()
        s.sendall(f"POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
                  f"Content-Length: 1000\r\n\r\n{{\"prompt\":".encode())
        # Meanwhile the server answers others.
        assert request(base, "/api/status")[0] == 200
        reply = s.recv(4096).decode(errors="replace")
        waited = time.time() - t0
        assert reply.startswith("HTTP/1.1 408"), reply[:200]
        assert 1.5 <= waited <= 8, waited
        rest = b"x"
        while rest:
            rest = s.recv(4096)  # the server closes the connection: recv returns b"" (or times out and fails)
        s.close()
        time.sleep(0.5)
        text = open(log).read()
        assert "POST /sdapi/v1/txt2img 200" in text and "POST /api/jobs 408" in text and "GET /api/status 200" in text, text[-2000:]
        assert secret not in text, "the access log holds a prompt"
        print(f"slow body: 408 after {waited:.1f} s and the connection closed; access log has a line per request and no prompt")
    finally:
        server.terminate()
        server.wait(10)


def queue_load_check(binary):
    server_url = queue_server()
    if not server_url:
        print("queue load: skipped (no $SLUICE_TEST_POSTGRES)")
        return
    url, name = create_database(server_url, "sluice_load_")
    gallery = tempfile.mkdtemp(prefix="sluice-qload-")
    server, base = start(binary, gallery, free_port(), extra=("--queue", url), per_client=200)
    workers = []
    try:
        before = request(base, "/api/status")[1]["memory_now"]["host_bytes"]
        job = lambda i: request(base, "/api/jobs", {"prompt": f"fox {i}", "width": 64, "height": 64, "steps": 4, "seed": i})
        with cf.ThreadPoolExecutor(max_workers=64) as pool:
            statuses = list(pool.map(lambda _: request(base, "/api/status")[0], range(200)))
            first = list(pool.map(job, range(50)))
        assert all(s == 200 for s in statuses), statuses
        accepted = [j[1]["id"] for j in first if j[0] == 202]
        assert len(accepted) == 16 and sum(j[0] == 429 for j in first) == 34, [j[0] for j in first]
        workers = [subprocess.Popen([binary, "worker", "--queue", url, "--model", MODEL, "--name", f"load-{n}", "--poll", "0.1"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for n in range(2)]
        wait_done(base, accepted, 120)
        with cf.ThreadPoolExecutor(max_workers=64) as pool:
            second = list(pool.map(job, range(50, 100)))
        assert all(j[0] in (202, 429) for j in second) and sum(j[0] == 202 for j in second) >= 16, [j[0] for j in second]
        accepted += [j[1]["id"] for j in second if j[0] == 202]
        wait_done(base, accepted, 180)
        pngs = [f for f in os.listdir(gallery) if f.endswith(".png")]
        assert sorted(pngs) == sorted(a + ".png" for a in accepted), (len(pngs), len(accepted))
        status = request(base, "/api/status")[1]
        assert sorted(w["id"] for w in status["workers"]) == ["load-0", "load-1"], status["workers"]
        after = status["memory_now"]["host_bytes"]
        assert after <= before * 1.5 + (256 << 20), (before, after)
        assert server.poll() is None, "front server exited"
        print(f"queue load: two workers; 16 of 50 accepted before they ran (34 × 429), {len(accepted) - 16} of 50 while they ran; "
              f"all {len(accepted)} done with one image each; front RSS {before >> 20} → {after >> 20} MiB")
    finally:
        for w in workers:
            w.terminate()
        server.terminate()
        server.wait(10)
        for w in workers:
            w.wait(10)
        drop_database(server_url, name)


if __name__ == "__main__":
    binary = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, ".build", "release", "sluice")
    load_check(binary)
    crash_check(binary)
    slow_body_check(binary)
    queue_load_check(binary)
