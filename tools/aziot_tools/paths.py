"""Where things are in a checkout of this repository."""

import os
import shutil

ROOT = os.environ.get("AZIOT_ROOT") or os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LIB = os.path.join(ROOT, "lib")
BUILD = os.path.join(ROOT, "build")
UNIX_LIB = os.path.join(BUILD, "unix-lib")  # aziot + umqtt as /lib on the Unix port
FLASHRUN = os.path.join(ROOT, "boards", "unix", "flashrun.py")
EXAMPLES = os.path.join(ROOT, "examples")


def micropython() -> str:
    """The Unix port: $MICROPYTHON, else the one installed beside this Python."""
    explicit = os.environ.get("MICROPYTHON")
    if explicit:
        return explicit
    import sys

    beside = os.path.join(os.path.dirname(sys.executable), "micropython")
    return beside if os.path.exists(beside) else (shutil.which("micropython") or "micropython")
