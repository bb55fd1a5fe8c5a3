"""Firmware builds against a MicroPython checkout that lives outside this repo (MPY_DIR).

Nothing of MicroPython, mbedTLS, pico-sdk or ESP-IDF is in this repo: the
board folders in boards/ are used as the ports' BOARD_DIR, and firmware/
adds the aziot_tls user C module and the mbedTLS configuration.
"""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys

from . import paths

BOARDS = {
    "RPI_PICO_W": {"port": "rp2", "image": "firmware.uf2"},
    "ESP32_GENERIC": {"port": "esp32", "image": "firmware.bin"},
}
MIN_MBEDTLS = (3, 6, 4)  # reassembles handshake messages split across records (MFL)
UNIX_MFL_DIR = os.path.join(paths.BUILD, "unix-mfl")


class BuildError(SystemExit):
    pass


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def micropython_version(mpy_dir: str) -> str:
    text = _read(os.path.join(mpy_dir, "py", "mpconfig.h"))
    parts = [re.search(r"#define MICROPY_VERSION_%s \(?(\d+)\)?" % p, text).group(1)
             for p in ("MAJOR", "MINOR", "MICRO")]
    prerelease = re.search(r"#define MICROPY_VERSION_PRERELEASE \(?(\d+)", text)
    return ".".join(parts) + ("-preview" if prerelease and prerelease.group(1) != "0" else "")


def mbedtls_version(mpy_dir: str):
    path = os.path.join(mpy_dir, "lib", "mbedtls", "include", "mbedtls", "build_info.h")
    if not os.path.exists(path):
        raise BuildError("%s has no lib/mbedtls: bring the submodules the port needs (see README: Firmware)"
                         % mpy_dir)
    found = re.search(r'#define MBEDTLS_VERSION_STRING\s+"(\d+)\.(\d+)\.(\d+)"', _read(path))
    return tuple(int(x) for x in found.groups())


def check_checkout(mpy_dir: str, port: str) -> str:
    """The checkout's absolute path; refuses, naming what is missing, one this firmware cannot build from."""
    if not mpy_dir:
        raise BuildError("set MPY_DIR to a MicroPython checkout with its submodules (see README: Firmware)")
    mpy_dir = os.path.abspath(mpy_dir)
    for sub in ("py", os.path.join("ports", port), os.path.join("lib", "micropython-lib", "micropython")):
        if not os.path.isdir(os.path.join(mpy_dir, sub)):
            raise BuildError("%s is not a MicroPython checkout with submodules: %s is missing" % (mpy_dir, sub))
    version = mbedtls_version(mpy_dir)
    if version < MIN_MBEDTLS:
        raise BuildError("%s carries mbedTLS %s; aziot needs %s or newer (MicroPython v1.29, or lib/mbedtls "
                         "at 3.6.4+): older mbedTLS cannot reassemble a handshake message split by Maximum "
                         "Fragment Length" % (mpy_dir, ".".join(map(str, version)), ".".join(map(str, MIN_MBEDTLS))))
    return mpy_dir


def _make(args, log):
    print("+ make " + " ".join(args), flush=True)
    with open(log, "w") as out:
        proc = subprocess.run(["make"] + args, stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode:
        with open(log) as f:
            tail = f.read()[-3000:]
        raise BuildError("make failed (log: %s):\n%s" % (os.path.relpath(log), tail))


def _check_m32():
    probe = subprocess.run(["gcc", "-m32", "-x", "c", "-", "-o", os.devnull], input="int main(void){return 0;}",
                           capture_output=True, text=True)
    if probe.returncode:
        raise BuildError("the board-faithful Unix builds are 32-bit: install Debian's gcc-multilib "
                         "(`make unix-mfl` does) (gcc -m32: %s)" % probe.stderr.strip().splitlines()[-1:])


def unix_variants() -> list:
    with open(os.path.join(paths.ROOT, "boards", "unix", "aziot_tls.json")) as f:
        return json.load(f)["variants"]


def build_unix_mfl(mpy_dir: str, jobs: int = 2) -> list:
    """The Unix port with aziot_tls, once per variant in boards/unix/aziot_tls.json; returns the binaries."""
    mpy_dir = check_checkout(mpy_dir, "unix")
    os.makedirs(UNIX_MFL_DIR, exist_ok=True)
    _make(["-C", os.path.join(mpy_dir, "mpy-cross"), "-j%d" % jobs], os.path.join(UNIX_MFL_DIR, "mpy-cross.log"))
    built = []
    for v in unix_variants():
        obj = os.path.join(UNIX_MFL_DIR, "obj-" + v["name"])
        board_like, cflags = [], []
        if v.get("bits") == 32:  # a board's word size: needs a 32-bit gcc (Debian gcc-multilib); no libffi then
            _check_m32()
            board_like, cflags = ["LDFLAGS_EXTRA=-m32", "MICROPY_PY_FFI=0"], ["-m32"]
        if v.get("gc_heap"):  # m_tracked_calloc, which the unix port compiles only along with ffi
            cflags.append("-DMICROPY_TRACKED_ALLOC=1")
        cflags += ["-D%s=%s" % item for item in sorted(v.get("defines", {}).items())]  # e.g. AZIOT_TLS_ECP_WINDOW
        if cflags:
            board_like.append("CFLAGS_EXTRA=" + " ".join(cflags))
        if v.get("frozen"):
            board_like.append("FROZEN_MANIFEST=" + os.path.join(paths.ROOT, "boards", "unix", "manifest.py"))
        _make(["-C", os.path.join(mpy_dir, "ports", "unix"), "-j%d" % jobs, "BUILD=" + obj,
               "USER_C_MODULES=" + os.path.join(paths.ROOT, "firmware"),
               # Quotes escaped for the shell the port's make runs the compiler through.
               'MBEDTLS_CONFIG_FILE=\\"aziot_mbedtls_config.h\\"', "MICROPY_PY_BTREE=0",
               "AZIOT_TLS_IN_LEN=%d" % v["in"], "AZIOT_TLS_OUT_LEN=%d" % v["out"],
               "AZIOT_TLS_DEFAULT_MFL=%d" % v["mfl"], "AZIOT_TLS_ECC_ONLY=%d" % v["ecc_only"],
               "AZIOT_TLS_VARIABLE_BUFFERS=%d" % v["variable"], "AZIOT_TLS_GC_HEAP=%d" % v.get("gc_heap", 0)]
              + board_like, os.path.join(UNIX_MFL_DIR, v["name"] + ".log"))
        target = os.path.join(UNIX_MFL_DIR, v["name"])
        shutil.copy2(os.path.join(obj, "micropython"), target)
        built.append(target)
        print("built %s (IN %d, OUT %d, default MFL %d%s%s%s) from MicroPython %s" % (
            os.path.relpath(target, paths.ROOT), v["in"], v["out"], v["mfl"],
            ", ECDHE-ECDSA only" if v["ecc_only"] else "", ", variable buffers" if v["variable"] else "",
            ", 32-bit, mbedTLS in the %s, run with a %s heap%s" % (
                "GC heap" if v.get("gc_heap") else "C heap", v["heap"], ", library frozen" if v.get("frozen") else "")
            if v.get("bits") == 32 else "",
            micropython_version(mpy_dir)))
    return built


def unix_mfl_binary(name: str = "micropython"):
    """A built unix-mfl binary, or None: tests skip without it."""
    path = os.environ.get("AZIOT_MFL_DIR", UNIX_MFL_DIR)
    binary = os.path.join(path, name)
    return binary if os.access(binary, os.X_OK) else None


def build_board(board: str, mpy_dir: str, jobs: int = 2) -> str:
    """The firmware image for a board folder in boards/; returns its path."""
    if board not in BOARDS:
        raise BuildError("BOARD must be one of %s, not %r" % (", ".join(BOARDS), board))
    port = BOARDS[board]["port"]
    mpy_dir = check_checkout(mpy_dir, port)
    out = os.path.join(paths.BUILD, "firmware", board)
    os.makedirs(out, exist_ok=True)
    if port == "esp32" and not os.environ.get("IDF_PATH"):
        raise BuildError("ESP32 firmware needs ESP-IDF: source its export.sh so that IDF_PATH is set")
    _make(["-C", os.path.join(mpy_dir, "mpy-cross"), "-j%d" % jobs], os.path.join(out, "mpy-cross.log"))
    build = os.path.join(out, "build")
    _make(["-C", os.path.join(mpy_dir, "ports", port), "-j%d" % jobs,
           "BOARD_DIR=" + os.path.join(paths.ROOT, "boards", board), "BUILD=" + build],
          os.path.join(out, "build.log"))
    image = os.path.join(build, BOARDS[board]["image"])
    print("built %s for %s from MicroPython %s (mbedTLS %s)" % (
        os.path.relpath(image, paths.ROOT), board, micropython_version(mpy_dir),
        ".".join(map(str, mbedtls_version(mpy_dir)))))
    return image


def esptool_command(port: str, *args) -> list:
    """esptool from this Python's environment, for the ESP32 on port."""
    return [sys.executable, "-m", "esptool", "--chip", "esp32", "--port", port, "--baud", "460800", *args]


def write_filesystem(board: str, image: str, port: str = None, dry_run: bool = False) -> list:
    """Write a board-sized filesystem image (aziot provision --board) where the port keeps its filesystem;
    returns the command. A factory line runs it after `flash`; the board then boots with its files."""
    from . import flashimage

    try:
        geometry = flashimage.board_geometry(board)
    except ValueError as e:
        raise BuildError(str(e))
    if not os.path.isfile(image):
        raise BuildError("no filesystem image at %s: make one with `aziot provision --board %s`" % (image, board))
    size = os.path.getsize(image)
    if size != geometry["size"]:
        raise BuildError("%s is %d bytes, but %s's filesystem is %d: make it with `aziot provision --board %s` "
                         "(a smaller one would be reformatted by MicroPython at boot)"
                         % (image, size, board, geometry["size"], board))
    with open(image, "rb") as f:
        if b"littlefs" not in f.read(2 * geometry["block_size"]):  # the superblock names itself in block 0 or 1
            raise BuildError("%s is not a littlefs image: make one with `aziot provision --board %s`" % (image, board))
    if board == "ESP32_GENERIC":
        if not port:
            raise BuildError("PORT must name the board's serial port, e.g. PORT=/dev/ttyUSB0")
        cmd = esptool_command(port, "write-flash", "0x%X" % geometry["flash_offset"], image)
    else:  # a Pico W held in BOOTSEL (picotool reaches it over USB; the UF2 drive cannot take raw data)
        cmd = ["picotool", "load", "-t", "bin", "-o", "0x%X" % (geometry["xip_base"] + geometry["flash_offset"]),
               image]
    print("+ " + shlex.join(cmd))
    if not dry_run and subprocess.run(cmd).returncode:
        raise BuildError("writing the filesystem failed")
    return cmd


def flash(board: str, port: str = None, image: str = None):
    """Write a built image: esptool for ESP32, a UF2 copy (or picotool) for Pico W."""
    if board not in BOARDS:
        raise BuildError("BOARD must be one of %s, not %r" % (", ".join(BOARDS), board))
    image = image or os.path.join(paths.BUILD, "firmware", board, "build", BOARDS[board]["image"])
    if not os.path.exists(image):
        raise BuildError("no firmware image at %s: run `make firmware BOARD=%s MPY_DIR=...` first"
                         % (os.path.relpath(image, paths.ROOT), board))
    if board == "ESP32_GENERIC":
        if not port:
            raise BuildError("PORT must name the board's serial port, e.g. PORT=/dev/ttyUSB0")
        # The venv's esptool (5.x: `write-flash`; `esptool.py` and `write_flash` are deprecated).
        cmd = esptool_command(port, "write-flash", "-z", "0x1000", image)
    elif port and os.path.isdir(port):  # the RPI-RP2 drive of a Pico held in BOOTSEL
        shutil.copy(image, os.path.join(port, os.path.basename(image)))
        print("copied %s to %s; the board reboots into it" % (image, port))
        return
    else:
        cmd = ["picotool", "load", "-x", image, "-f"]
    print("+ " + " ".join(cmd))
    if subprocess.run(cmd).returncode:
        raise BuildError("flashing failed")
