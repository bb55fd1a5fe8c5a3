"""The hub chain's verified signatures, kept on flash so that the first connect after a reset
skips them too (the firmware's aziot_tls.verify_cache_export/import; README "Verified signatures,
remembered"). Only signatures of handshakes that accepted their chain are exported; a file that is not an
export of this very firmware build is ignored (verified afresh, then rewritten)."""

import gc
import os

import aziot_tls  # imported by aziot.link only where the firmware has it

_MAX_FILE = 8 + 64 * 32  # the firmware's tag, then 32 bytes per signature

_on_flash = {}  # path -> what the file holds (as read, or last written or tried this boot)


def _same(a, b):
    """The same tag and signatures, in whatever order (a hit makes its entry the newest)."""
    return a[:8] == b[:8] and sorted(a[i:i + 32] for i in range(8, len(a), 32)) == sorted(
        b[i:i + 32] for i in range(8, len(b), 32))


def recall(path):
    """Once per boot and file: hand the entries on flash to the firmware."""
    if path in _on_flash:
        return
    data = b""
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_FILE + 1)
        if len(data) > _MAX_FILE:
            data = b""
        else:
            aziot_tls.verify_cache_import(data)
    except (OSError, ValueError):  # none yet; torn, foreign, or another firmware build's
        data = b""
    _on_flash[path] = data


def keep(path):
    """After a handshake: write what the firmware kept when it differs from the file (a new chain)."""
    if path not in _on_flash:
        return
    held = aziot_tls.verify_cache_export()
    if _same(held, _on_flash[path]):
        return
    _on_flash[path] = held  # tried once: a full or read-only filesystem is not retried every connect
    tmp = path + ".tmp"
    gc.collect()  # the file's buffer (a flash block) comes next, while the connection holds its own
    try:
        with open(tmp, "wb") as f:
            f.write(held)
        os.rename(tmp, path)  # whole or not at all
    except OSError:
        try:
            os.remove(tmp)
        except OSError:
            pass
