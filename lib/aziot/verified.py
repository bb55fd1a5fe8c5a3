"""The hub chain's verified signatures, kept on flash so that the first connect after a reset
skips them too (the firmware's aziot_tls.verify_cache_export/import; README "Verified signatures,
remembered"). A file that is not whole 32-byte entries is ignored; writing it fails quietly."""

import gc
import os

try:
    import aziot_tls
except ImportError:
    aziot_tls = None

_ENTRY = 32
_MAX_FILE = 64 * _ENTRY

_on_flash = {}  # path -> what the file holds, as read or last written this boot


def _supported(path):
    return bool(path) and aziot_tls is not None and hasattr(aziot_tls, "verify_cache_import")


def recall(path):
    """Once per boot and file: hand the entries on flash to the firmware."""
    if not _supported(path) or path in _on_flash:
        return
    data = b""
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_FILE + 1)
        if len(data) > _MAX_FILE or len(data) % _ENTRY:
            data = b""  # torn or foreign: verified afresh, then written whole
        else:
            aziot_tls.verify_cache_import(data)
    except OSError:
        data = b""  # none yet
    _on_flash[path] = data


def keep(path):
    """After a handshake: write the firmware's entries when they differ from the file (a new chain)."""
    if not _supported(path) or path not in _on_flash:
        return
    held = aziot_tls.verify_cache_export()
    if held == _on_flash[path]:
        return
    tmp = path + ".tmp"
    gc.collect()  # the file's buffer (a flash block) comes next, while the connection holds its own
    try:
        with open(tmp, "wb") as f:
            f.write(held)
        os.rename(tmp, path)  # whole or not at all
        _on_flash[path] = held
    except OSError:
        pass  # a read-only or full filesystem: remembered in RAM only
