"""Which cipher offer to make to a hub, and the `auto` profile's memory of what worked.

IoT Hub presents its ECC certificate only on hubs created with preview mode
on, and only to a ClientHello that offers ECDSA suites and no RSA suites; a
standard hub has only its RSA chain and answers that offer with a
handshake-failure alert ("Transport Layer Security (TLS) support in IoT
Hub", Microsoft Learn). So ECC first with an RSA fallback is two handshakes
on a standard hub. `auto` pays that once: it remembers per hub host which
offer worked, in RAM and in a small file on flash, and offers ECC again only
after `tls_probe_s` seconds (a hub's kind is fixed when it is created, so
this only matters when the device is moved to another hub of the same name).
"""

import json
import os

_MAX_FILE = 256  # what the memory file can hold; anything longer is not ours

# The offers made, in order, for each configured profile (when nothing is remembered).
ORDERS = {"ecc": ("ecc",), "rsa": ("rsa",), "compat": ("compat",),
          "ecc+rsa": ("ecc", "rsa"), "auto": ("ecc", "rsa")}


class ProfileChooser:
    def __init__(self, profile, hub_host, memory_file="", probe_s=604800):
        self.profile = profile
        self.hub_host = hub_host
        self.memory_file = memory_file  # "" keeps the memory in RAM only
        self.probe_s = probe_s
        self.learned = None  # (profile, clock seconds) for hub_host
        if profile == "auto" and memory_file:
            self.learned = self._load()

    def order(self, now):
        """The offers to make at this connect, first to last."""
        if self.profile != "auto" or not self._fresh(now):
            return ORDERS[self.profile]
        first = self.learned[0]
        return (first,) + tuple(p for p in ORDERS["auto"] if p != first)

    def worked(self, profile, now):
        """Remember the offer that got a handshake; flash is written only when the answer changes or ages."""
        if self.profile != "auto" or not self.probe_s or (
                self.learned and self.learned[0] == profile and self._fresh(now)):
            return  # (tls_probe_s 0: ECC is offered at every connect, nothing to keep)
        self.learned = (profile, int(now))
        if self.memory_file:
            self._save()

    def _fresh(self, now):
        # An unset clock that was set since (or a reboot with it unset) makes the age
        # negative or huge: both mean "probe again", which costs one refused ClientHello.
        return self.learned is not None and 0 <= now - self.learned[1] < self.probe_s

    def _load(self):
        try:
            with open(self.memory_file) as f:
                text = f.read(_MAX_FILE)
            saved = json.loads(text)
            at = saved["at"]
            if (saved["hub_host"] == self.hub_host and saved["profile"] in ("ecc", "rsa")
                    and isinstance(at, int) and not isinstance(at, bool)):
                return saved["profile"], at
        except Exception:  # nothing remembered, or a torn, foreign or hostile file: probe ECC first
            pass
        return None

    def _save(self):
        tmp = self.memory_file + ".tmp"
        try:
            with open(tmp, "w") as f:
                f.write(json.dumps({"hub_host": self.hub_host, "profile": self.learned[0], "at": self.learned[1]}))
            os.rename(tmp, self.memory_file)  # whole or not at all
        except OSError:
            pass  # a read-only or full filesystem: remembered in RAM only
