"""Run device code under the MicroPython Unix port with a flash image."""

import os
import queue
import subprocess
import threading
import time
from dataclasses import dataclass

from . import deps, paths


@dataclass
class DeviceRun:
    returncode: int
    stdout: str
    stderr: str

    @property
    def running(self) -> bool:
        return self._proc.poll() is None

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def prepare_unix_lib(lib_dir: str = paths.UNIX_LIB) -> str:
    """build/unix-lib: a link to lib/aziot and the pinned umqtt.simple."""
    os.makedirs(lib_dir, exist_ok=True)
    link = os.path.join(lib_dir, "aziot")
    if not os.path.islink(link):
        os.symlink(os.path.relpath(os.path.join(paths.LIB, "aziot"), lib_dir), link)
    deps.fetch_umqtt(lib_dir)
    return lib_dir


def command(image, app=None, app_args=(), heap=None, lib_dir=paths.UNIX_LIB, binary=None):
    """The micropython command line that runs app (or the image's /main.py) on the mounted image."""
    cmd = [binary or paths.micropython()]
    if binary is None:  # $MICROPYTHON_HEAP goes with $MICROPYTHON: a board's heap, e.g. 210K
        heap = heap or os.environ.get("MICROPYTHON_HEAP")
    if heap:
        cmd += ["-X", "heapsize=" + heap]
    cmd += [paths.FLASHRUN, image, lib_dir]
    if app:
        cmd += [app, *app_args]
    return cmd


def run(image: str, app: str = None, *app_args, timeout: float = 60, heap: str = None,
        lib_dir: str = paths.UNIX_LIB, env: dict = None, binary: str = None) -> DeviceRun:
    """Run app (a .py path, with app_args as sys.argv[1:]) or the image's /main.py.

    heap, e.g. "160K", gives MicroPython a board-sized heap; binary, another
    micropython than $MICROPYTHON or the venv's (e.g. a unix-mfl build).
    """
    proc = subprocess.run(command(image, app, app_args, heap, lib_dir, binary), capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, **(env or {})))
    return DeviceRun(proc.returncode, proc.stdout, proc.stderr)


class LiveDevice:
    """A device app running in the background, so the cloud side can talk to it meanwhile.

    Its stdout is read line by line; expect() waits for a line. Use as a
    context manager: the process is stopped (killed if need be) on exit.
    """

    def __init__(self, image: str, app: str, *app_args, heap: str = None, lib_dir: str = paths.UNIX_LIB,
                 binary: str = None):
        self._proc = subprocess.Popen(command(image, app, app_args, heap, lib_dir, binary), stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True, bufsize=1)
        self.lines = []  # everything printed so far
        self._new = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self._proc.stdout:
            line = line.rstrip("\n")
            self.lines.append(line)
            self._new.put(line)
        self._new.put(None)

    def expect(self, prefix: str, timeout: float = 20) -> str:
        """The next line starting with prefix; AssertionError with the output so far if none comes."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                line = self._new.get(timeout=max(left, 0))
            except queue.Empty:
                line = None
                left = 0
            if line is None and (left <= 0 or self._proc.poll() is not None):
                raise AssertionError("device never printed %r; output:\n%s" % (prefix, self.output))
            if line is not None and line.startswith(prefix):
                return line

    @property
    def running(self) -> bool:
        return self._proc.poll() is None

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait(self, timeout: float = 20) -> int:
        rc = self._proc.wait(timeout)
        self._reader.join(5)
        return rc

    def stop(self):
        if self._proc.poll() is None:
            self._proc.kill()
        self.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
