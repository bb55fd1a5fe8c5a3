"""Device-side dependencies the host tests need: umqtt.simple, pinned.

micropython-umqtt.simple was packaged for the old `upip`, so pip cannot
install it; this fetches the pinned sdist by name from the package index pip
is configured with, checks its sha256 and extracts `umqtt/simple.py`.
"""

import hashlib
import io
import json
import os
import sys
import tarfile
import urllib.request

UMQTT_PROJECT = "micropython-umqtt-simple"
UMQTT_FILE = "micropython-umqtt.simple-1.3.4.tar.gz"
UMQTT_SHA256 = "b6a2520239e3992c63a7de9370ee9b3d9d27819a90359c521f1c0f7ccab8d12f"


def index_url() -> str:
    url = os.environ.get("PIP_INDEX_URL")
    if not url:
        from pip._internal.models.index import PyPI  # pip's own default index

        url = PyPI.simple_url
    return url.rstrip("/")


def fetch_umqtt(lib_dir: str) -> str:
    """Install umqtt/simple.py under lib_dir (idempotent); returns its path."""
    target = os.path.join(lib_dir, "umqtt", "simple.py")
    stamp = target + ".sha256"
    if os.path.exists(target) and os.path.exists(stamp) and open(stamp).read() == UMQTT_SHA256:
        return target
    req = urllib.request.Request("%s/%s/" % (index_url(), UMQTT_PROJECT),
                                 headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        files = json.load(resp)["files"]
    match = [f for f in files if f["filename"] == UMQTT_FILE]
    if not match:
        raise SystemExit("%s not listed by the package index" % UMQTT_FILE)
    with urllib.request.urlopen(match[0]["url"], timeout=60) as resp:
        data = resp.read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != UMQTT_SHA256:
        raise SystemExit("sha256 mismatch for %s: got %s, pinned %s" % (UMQTT_FILE, digest, UMQTT_SHA256))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("/umqtt/simple.py"))
        source = tar.extractfile(member).read()
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with open(target, "wb") as f:
        f.write(source)
    with open(stamp, "w") as f:
        f.write(UMQTT_SHA256)
    return target


if __name__ == "__main__":
    print(fetch_umqtt(sys.argv[1]))
