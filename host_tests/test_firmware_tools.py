"""The firmware build tool's refusals, and the board folders' consistency (no MicroPython needed)."""

import os
import subprocess
import sys

import pytest

from aziot_tools import firmware, paths


def fake_checkout(root, mbedtls="3.6.6", port="unix"):
    for sub in ("py", os.path.join("ports", port), os.path.join("lib", "micropython-lib", "micropython"),
                os.path.join("lib", "mbedtls", "include", "mbedtls")):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    with open(os.path.join(root, "lib", "mbedtls", "include", "mbedtls", "build_info.h"), "w") as f:
        f.write('#define MBEDTLS_VERSION_STRING         "%s"\n' % mbedtls)
    return str(root)


def test_build_refuses_an_mbedtls_too_old_to_reassemble_handshake_messages(tmp_path):
    old = fake_checkout(tmp_path / "mpy-1.28", mbedtls="3.6.2")
    with pytest.raises(SystemExit) as e:
        firmware.check_checkout(old, "unix")
    assert str(e.value) == ("%s carries mbedTLS 3.6.2; aziot needs 3.6.4 or newer (MicroPython v1.29, or "
                            "lib/mbedtls at 3.6.4+): older mbedTLS cannot reassemble a handshake message split "
                            "by Maximum Fragment Length" % old)
    firmware.check_checkout(fake_checkout(tmp_path / "mpy-master"), "unix")  # 3.6.6 passes


def test_build_names_what_is_missing(tmp_path):
    with pytest.raises(SystemExit, match="set MPY_DIR to a MicroPython checkout"):
        firmware.check_checkout("", "unix")
    bare = fake_checkout(tmp_path / "mpy", port="unix")
    with pytest.raises(SystemExit, match="ports/rp2 is missing"):
        firmware.check_checkout(bare, "rp2")
    os.remove(os.path.join(bare, "lib", "mbedtls", "include", "mbedtls", "build_info.h"))
    with pytest.raises(SystemExit, match="has no lib/mbedtls: bring the submodules"):
        firmware.check_checkout(bare, "unix")


def test_make_unix_mfl_without_mpy_dir_says_what_to_do():
    proc = subprocess.run([sys.executable, "-m", "aziot_tools.cli", "firmware", "unix-mfl", "--mpy-dir", ""],
                          capture_output=True, text=True, timeout=60, env=dict(os.environ, MPY_DIR=""))
    assert proc.returncode == 1
    assert "set MPY_DIR to a MicroPython checkout with its submodules (see README: Firmware)" in proc.stderr


def test_flash_without_a_built_image_says_how_to_build_one(tmp_path):
    missing = str(tmp_path / "firmware.uf2")
    with pytest.raises(SystemExit, match=r"no firmware image at .*firmware.uf2: run `make firmware "
                                         r"BOARD=RPI_PICO_W MPY_DIR=...` first"):
        firmware.flash("RPI_PICO_W", image=missing)
    with pytest.raises(SystemExit, match="BOARD must be one of RPI_PICO_W, ESP32_GENERIC, not 'PICO2'"):
        firmware.flash("PICO2")


@pytest.mark.parametrize("board", ["RPI_PICO_W", "ESP32_GENERIC"])
def test_board_folders_reuse_upstream_and_add_the_hook_and_the_library(board):
    folder = os.path.join(paths.ROOT, "boards", board)
    cmake = open(os.path.join(folder, "mpconfigboard.cmake")).read()
    assert "include(${MICROPY_PORT_DIR}/boards/%s/mpconfigboard.cmake)" % board in cmake
    assert "firmware/aziot_tls/micropython.cmake" in cmake
    assert '#include "boards/%s/mpconfigboard.h"' % board in open(os.path.join(folder, "mpconfigboard.h")).read()
    manifest = open(os.path.join(folder, "manifest.py")).read()
    assert 'include("../../firmware/manifest.py")' in manifest
    if board == "ESP32_GENERIC":
        sdk = open(os.path.join(folder, "sdkconfig.aziot")).read()
        # A standard hub sends 16 KB records: the default board build must hold them.
        assert "CONFIG_MBEDTLS_SSL_IN_CONTENT_LEN=16384" in sdk and "CONFIG_MBEDTLS_SSL_VARIABLE_BUFFER_LENGTH=y" in sdk
    else:
        assert "MBEDTLS_CONFIG_FILE ${AZIOT_DIR}/firmware/aziot_tls/aziot_mbedtls_config.h" in cmake
        assert "set(AZIOT_TLS_IN_LEN 16384)" in cmake


def test_esp32_flashing_uses_the_venvs_esptool_with_its_current_command_names(tmp_path, capfd):
    """No board here: the real esptool parses the whole command line, then fails to open the port."""
    image = tmp_path / "firmware.bin"
    image.write_bytes(b"\xe9" + bytes(4095))
    with pytest.raises(firmware.BuildError, match="flashing failed"):
        firmware.flash("ESP32_GENERIC", port="/dev/aziot-no-such-port", image=str(image))
    out = capfd.readouterr()
    text = out.out + out.err
    assert "-m esptool --chip esp32 --port /dev/aziot-no-such-port --baud 460800 write-flash -z 0x1000" in text
    assert "/dev/aziot-no-such-port" in text.split("write-flash", 1)[1]  # esptool's own complaint names it
    assert "deprecated" not in text.lower() and "usage:" not in text.lower()  # the command line was accepted


def _kconfig_symbols(text: str) -> dict:
    """config NAME -> {"type": bool|int|string, "range": (lo, hi)} from a Kconfig file."""
    symbols, current = {}, None
    for line in text.splitlines():
        words = line.split()
        if not words:
            continue
        if words[0] in ("config", "menuconfig") and len(words) == 2:
            current = symbols.setdefault(words[1], {})
        elif words[0] in ("choice", "endchoice", "menu", "endmenu", "if", "endif", "comment"):
            current = None
        elif current is not None and words[0] in ("bool", "int", "string", "hex", "tristate"):
            current["type"] = words[0]
        elif current is not None and words[0] == "range" and len(words) >= 3:
            current["range"] = (int(words[1], 0), int(words[2], 0))
    return symbols


@pytest.mark.skipif(not os.environ.get("IDF_DIR"), reason="no ESP-IDF checkout: set IDF_DIR to check sdkconfig.aziot")
def test_esp32_sdkconfig_keys_exist_in_esp_idfs_kconfig_with_valid_values():
    kconfig = open(os.path.join(os.environ["IDF_DIR"], "components", "mbedtls", "Kconfig")).read()
    symbols = _kconfig_symbols(kconfig)
    settings = [line.split("=", 1) for line in open(os.path.join(paths.ROOT, "boards", "ESP32_GENERIC",
                                                                 "sdkconfig.aziot")).read().splitlines()
                if line and not line.startswith("#")]
    assert settings
    for key, value in settings:
        name = key[len("CONFIG_"):]
        assert key.startswith("CONFIG_") and name in symbols, "%s is not an ESP-IDF mbedTLS option" % key
        kind = symbols[name].get("type")
        if kind == "bool":
            assert value in ("y", "n"), (key, value)
        elif kind == "int":
            lo, hi = symbols[name].get("range", (-2 ** 31, 2 ** 31))
            assert lo <= int(value) <= hi, (key, value, (lo, hi))
    values = dict(settings)
    # The standard-hub decision: whole 16 KB records in, shrunk only when the hub agreed to MFL.
    assert values["CONFIG_MBEDTLS_SSL_IN_CONTENT_LEN"] == "16384"
    assert values["CONFIG_MBEDTLS_SSL_VARIABLE_BUFFER_LENGTH"] == "y"


@pytest.mark.parametrize("board", ["RPI_PICO_W", "ESP32_GENERIC"])
def test_a_board_sized_filesystem_image_mounts_and_the_device_connects(board, hub, provision_device, run_device):
    from aziot_tools import flashimage

    from devicecode import CONNECT_AND_SEND, outcome

    dev = provision_device("dev-" + board.lower().replace("_", "-"), hub, board=board)
    geometry = flashimage.board_geometry(board)
    assert os.path.getsize(dev.image_path) == geometry["size"]
    assert outcome(run_device(dev.image_path, CONNECT_AND_SEND)) == "DONE"


@pytest.mark.parametrize("board,expected", [
    ("RPI_PICO_W", "picotool load -t bin -o 0x1012C000 "),
    ("ESP32_GENERIC", "-m esptool --chip esp32 --port /dev/ttyUSB9 --baud 460800 write-flash 0x200000 "),
])
def test_writing_a_filesystem_image_names_the_ports_offset(board, expected, hub_state, provision_device, tmp_path):
    dev = provision_device("dev-fs", board=board)
    proc = subprocess.run([sys.executable, "-m", "aziot_tools.cli", "firmware", "fs", "--board", board, "--image",
                           dev.image_path, "--port", "/dev/ttyUSB9", "--dry-run"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert expected + dev.image_path in proc.stdout
    small = tmp_path / "small.img"
    small.write_bytes(bytes(256 * 1024))
    proc = subprocess.run([sys.executable, "-m", "aziot_tools.cli", "firmware", "fs", "--board", board, "--image",
                           str(small), "--port", "/dev/ttyUSB9", "--dry-run"], capture_output=True, text=True)
    assert proc.returncode != 0 and "a smaller one would be reformatted by MicroPython at boot" in proc.stderr
    zeros = tmp_path / "zeros.img"
    zeros.write_bytes(bytes(os.path.getsize(dev.image_path)))
    proc = subprocess.run([sys.executable, "-m", "aziot_tools.cli", "firmware", "fs", "--board", board, "--image",
                           str(zeros), "--port", "/dev/ttyUSB9", "--dry-run"], capture_output=True, text=True)
    assert proc.returncode != 0 and "is not a littlefs image" in proc.stderr


@pytest.mark.skipif(not os.environ.get("MPY_DIR"), reason="no MicroPython checkout: set MPY_DIR to check the layouts")
def test_the_filesystem_layouts_match_the_ports_sources():
    import csv
    import re

    from aziot_tools import flashimage

    mpy = os.environ["MPY_DIR"]
    pico = flashimage.board_geometry("RPI_PICO_W")
    cmake = open(os.path.join(mpy, "ports", "rp2", "boards", "RPI_PICO_W", "mpconfigboard.cmake")).read()
    assert int(re.search(r"set\(MICROPY_HW_FLASH_STORAGE_BYTES (\d+)\)", cmake).group(1)) == pico["size"]
    assert pico["flash_offset"] == 2 * 1024 * 1024 - pico["size"]  # pico_w.h: PICO_FLASH_SIZE_BYTES 2 MB
    assert "progsize=%d" % pico["prog_size"] in open(os.path.join(mpy, "ports", "rp2", "modules", "_boot.py")).read()
    esp = flashimage.board_geometry("ESP32_GENERIC")
    base = open(os.path.join(mpy, "ports", "esp32", "boards", "sdkconfig.base")).read()
    table = re.search(r'CONFIG_PARTITION_TABLE_CUSTOM_FILENAME="([^"]+)"', base).group(1)
    rows = [r for r in csv.reader(open(os.path.join(mpy, "ports", "esp32", table)))
            if r and not r[0].startswith("#")]
    end = max(int(r[3], 0) + int(r[4], 0) for r in rows)
    assert not any(r[0].strip() == "vfs" for r in rows)  # so main.c makes it from `end` to the end of flash
    assert end == esp["flash_offset"] and esp["size"] == 4 * 1024 * 1024 - end
    assert "vfs.VfsLfs2(bdev)" in open(os.path.join(mpy, "ports", "esp32", "modules", "inisetup.py")).read()
