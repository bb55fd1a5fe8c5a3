"""The device's filesystem as a littlefs2 image, built on the host.

The same image mounts under the Unix port (boards/unix/flashrun.py) and
can be written to a board's filesystem partition.

On-flash layout (what lib/aziot reads by default):
    /azure-iot/config.json        device config (aziot.config)
    /azure-iot/roots/*.der        trusted root CAs, one file each
    /azure-iot/device.der         device certificate (DER)
    /azure-iot/device-key.der     device private key (PKCS#8 DER)
    /main.py                  the app a board runs at boot (optional)
"""

import json
import os

from littlefs import LittleFS

from . import paths

BLOCK_SIZE = 4096


def board_geometry(board: str) -> dict:
    """boards/<board>/flash.json: where the port keeps its filesystem and with which littlefs sizes."""
    path = os.path.join(paths.ROOT, "boards", board, "flash.json")
    if not os.path.exists(path):
        boards = sorted(b for b in os.listdir(os.path.join(paths.ROOT, "boards"))
                        if os.path.exists(os.path.join(paths.ROOT, "boards", b, "flash.json")))
        raise ValueError("no filesystem layout for board %r (known: %s)" % (board, ", ".join(boards)))
    with open(path) as f:
        return json.load(f)


def build_image(files: dict, block_count: int = 64, board: str = None) -> bytes:
    """files: flash path -> bytes. Returns the raw image: block_count x 4 KB, or, for a board,
    exactly its filesystem's size with the port's littlefs sizes, so that it mounts as is."""
    if board:
        g = board_geometry(board)
        fs = LittleFS(block_size=g["block_size"], block_count=g["size"] // g["block_size"],
                      read_size=g["read_size"], prog_size=g["prog_size"], lookahead_size=g["lookahead_size"])
    else:
        fs = LittleFS(block_size=BLOCK_SIZE, block_count=block_count)
    for path in sorted(files):
        parent = path.rsplit("/", 1)[0]
        if parent:
            fs.makedirs(parent, exist_ok=True)
        with fs.open(path, "wb") as f:
            f.write(files[path])
    return bytes(fs.context.buffer)


def read_image(image: bytes, block_count: int = None) -> dict:
    """flash path -> bytes, for checking what a device holds."""
    block_count = block_count or len(image) // BLOCK_SIZE
    fs = LittleFS(block_size=BLOCK_SIZE, block_count=block_count, mount=False)
    fs.context.buffer[:] = image
    fs.mount()
    out = {}
    for root, _dirs, names in fs.walk("/"):
        for name in names:
            path = root.rstrip("/") + "/" + name
            with fs.open(path, "rb") as f:
                out[path] = f.read()
    return out
