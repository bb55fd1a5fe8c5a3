"""`aziot install`: the library as .mpy and a device's files onto a board with mpremote.

No board here, and mpremote needs a MicroPython raw REPL on a serial line:
the Unix port's REPL has none and MicroPython's QEMU port has no writable
filesystem. So the exact mpremote command lines are checked (--dry-run),
and the .mpy files they would copy are run in micropython.
"""

import os
import shlex
import subprocess
import sys

import pytest

from aziot_tools import flashimage, install
from devicecode import CONNECT_AND_SEND, outcome


def test_every_file_goes_over_mpremote_and_is_read_back(tmp_path, hub_state, provision_device):
    dev = provision_device("inst-1", main_py=b"print('hello')\n")
    files = install.plan(dev.image_path, str(tmp_path / "staging"))
    commands = install.commands("/dev/ttyACM0", files)
    assert all(c[1:5] == ["-m", "mpremote", "connect", "/dev/ttyACM0"] for c in commands)
    copies = {c[-1][1:]: c[-2] for c in commands if c[5:7] == ["fs", "cp"]}
    image_files = flashimage.read_image(open(dev.image_path, "rb").read())
    lib_dir = os.path.join(os.path.dirname(install.__file__), "..", "..", "lib", "aziot")
    library = {"/lib/aziot/%s.mpy" % n[:-3] for n in os.listdir(lib_dir) if n.endswith(".py")}
    assert set(copies) == set(image_files) | library | {"/lib/umqtt/simple.mpy"}
    for path, local in copies.items():
        if path in image_files:
            assert open(local, "rb").read() == image_files[path]  # what is copied is what was provisioned
    assert commands[0][5] == "exec" and "os.mkdir" in commands[0][6]
    assert commands[-1][5] == "exec" and "hashlib.sha256" in commands[-1][6]
    assert all(repr(path) in commands[-1][6] for path in copies)  # every file is read back
    # The CLI prints the same commands, shell-quoted, with --dry-run.
    proc = subprocess.run([sys.executable, "-m", "aziot_tools.cli", "install", dev.image_path, "--port",
                           "/dev/ttyACM0", "--dry-run"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count(" fs cp ") == len(copies)
    assert shlex.join(commands[1][5:7]) in proc.stdout


def test_the_mpy_files_run_on_micropython_of_the_version_they_were_made_for(hub, provision_device, tmp_path):
    from aziot_tools import device, paths

    lib = tmp_path / "mpylib"
    install.compile_library(str(lib))
    board_mpy = subprocess.run([paths.micropython(), "-c", "import sys; print(sys.implementation._mpy)"],
                               capture_output=True, text=True).stdout
    assert install.board_accepts(int(board_mpy), install.mpy_cross_version())
    assert not any(name.endswith(".py") for name in os.listdir(lib / "aziot"))
    dev = provision_device("inst-mpy", hub)
    app = tmp_path / "app.py"
    app.write_text(CONNECT_AND_SEND)
    run = device.run(dev.image_path, str(app), lib_dir=str(lib))
    assert outcome(run) == "DONE", run.output


def test_an_mpy_version_the_board_cannot_load_is_refused():
    assert install.board_accepts(0xB06, (6, 3))  # a 1.29 port (x64 native arch bits set)
    assert not install.board_accepts(0x206, (6, 3))  # v6.2: MicroPython 1.22-1.24
    assert not install.board_accepts(0x305, (6, 3))


@pytest.mark.skipif(not os.environ.get("AZIOT_BOARD_PORT"),
                    reason="no board: set AZIOT_BOARD_PORT to its serial port (mpremote needs a raw REPL, which the "
                           "Unix port lacks, and a writable filesystem, which MicroPython's QEMU port lacks)")
def test_install_onto_a_board(hub_state, provision_device):
    dev = provision_device("inst-board", main_py=b"print('hello from aziot')\n")
    lines = []
    assert install.install(dev.image_path, os.environ["AZIOT_BOARD_PORT"], say=lines.append) == 0
    assert lines[-1].startswith("installed ") and lines[-1].endswith("its SHA-256 matched")


def test_an_image_path_cannot_steer_where_staging_is_cleared(tmp_path, hub_state, provision_device):
    """The staging folder is cleared before each install: whatever the image's name, only its own."""
    from aziot_tools import paths

    keep = os.path.join(paths.BUILD, "install", "keep-me")
    os.makedirs(keep, exist_ok=True)
    for bad in ("..", str(tmp_path) + "/", str(tmp_path / "nothing.img")):
        with pytest.raises(install.InstallError):
            install.install(bad, "/dev/ttyACM0", dry_run=True, say=lambda line: None)
    assert os.path.isdir(keep) and os.path.isdir(paths.BUILD)
    os.rmdir(keep)
    (tmp_path / "zeros.img").write_bytes(bytes(64 * 4096))
    with pytest.raises(install.InstallError, match="is not a littlefs image made by aziot provision"):
        install.install(str(tmp_path / "zeros.img"), "/dev/ttyACM0", dry_run=True, say=lambda line: None)
