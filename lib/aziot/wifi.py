"""Bring a board online before its first TLS connect: Wi-Fi, then the clock.

TLS to the hub needs both: a route, and the current time to check the hub's
certificate (at boot an ESP32's RTC reads 2000-01-01, a Pico W's 2021-01-01,
and every certificate "starts in the future"). ESP32 and Pico W share the
API used here: network.WLAN(network.STA_IF) and ntptime.

    from aziot import wifi
    wifi.online()      # /azure-iot/wifi.json: {"ssid": "...", "password": "..."}
"""

import json
import time

from . import clock
from .errors import ClockError, ConfigError, NetworkError

DEFAULT_PATH = "/azure-iot/wifi.json"
_MAX_FILE = 512  # an SSID is at most 32 bytes and a WPA2 passphrase 63

# network.STAT_* values differ between ports: name them from the port's own constants.
_STATUS_NAMES = ("STAT_IDLE", "STAT_CONNECTING", "STAT_WRONG_PASSWORD", "STAT_NO_AP_FOUND",
                 "STAT_CONNECT_FAIL", "STAT_GOT_IP", "STAT_BEACON_TIMEOUT", "STAT_ASSOC_FAIL",
                 "STAT_HANDSHAKE_TIMEOUT")
_HOPELESS = ("STAT_WRONG_PASSWORD", "STAT_NO_AP_FOUND")  # waiting longer will not help


def _status_name(network, code):
    for name in _STATUS_NAMES:
        if getattr(network, name, None) == code:
            return name[5:].lower().replace("_", " ")
    return "status %r" % (code,)


def join(ssid, password, timeout_s=20, attempts=3, say=print):
    """Join the access point; returns the WLAN interface or raises NetworkError naming the last status."""
    try:
        import network
    except ImportError:
        raise NetworkError("this port has no network module: it cannot join Wi-Fi (on the Unix port the "
                           "host's network is used as it is)")
    wlan = network.WLAN(network.STA_IF)
    wlan.active(True)
    if wlan.isconnected():
        return wlan
    last = "not tried"
    for attempt in range(1, attempts + 1):
        say("wifi: joining %r (attempt %d of %d)" % (ssid, attempt, attempts))
        wlan.connect(ssid, password)
        deadline = time.ticks_add(time.ticks_ms(), timeout_s * 1000)
        while time.ticks_diff(deadline, time.ticks_ms()) > 0:
            if wlan.isconnected():
                say("wifi: connected, address %s" % wlan.ifconfig()[0])
                return wlan
            last = _status_name(network, wlan.status())
            if any(getattr(network, name, object()) == wlan.status() for name in _HOPELESS):
                break
            time.sleep_ms(250)
        else:
            last = "no address after %d s (%s)" % (timeout_s, last)
        say("wifi: %s" % last)
        wlan.disconnect()
        time.sleep_ms(1000 * attempt)
    raise NetworkError("Wi-Fi %r not joined after %d attempts: %s" % (ssid, attempts, last))


def load(path=DEFAULT_PATH):
    """The Wi-Fi settings: {"ssid", "password", optional "timeout_s", "attempts"}; the password is never shown."""
    try:
        with open(path) as f:
            text = f.read(_MAX_FILE + 1)
    except OSError:
        raise ConfigError("Wi-Fi settings not found: %s" % path)
    except UnicodeError:
        raise ConfigError("Wi-Fi settings are not UTF-8 text: %s" % path)
    if len(text) > _MAX_FILE:
        raise ConfigError("Wi-Fi settings are larger than %d bytes: %s" % (_MAX_FILE, path))
    try:
        settings = json.loads(text)
    except ValueError:
        raise ConfigError("Wi-Fi settings are not valid JSON: %s" % path)
    if not isinstance(settings, dict) or not isinstance(settings.get("ssid"), str) or not settings["ssid"]:
        raise ConfigError("%s: key 'ssid' must be a non-empty string" % path)
    if not isinstance(settings.get("password", ""), str):
        raise ConfigError("%s: key 'password' must be a string" % path)
    for key, low, high, default in (("timeout_s", 1, 600, 20), ("attempts", 1, 20, 3)):
        value = settings.setdefault(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise ConfigError("%s: key %r must be a whole number %d..%d" % (path, key, low, high))
    return settings


def online(path=DEFAULT_PATH, say=print, ntp_attempts=3):
    """Wi-Fi from the settings file, then the clock from NTP: call before HubClient.connect()."""
    settings = load(path)
    join(settings["ssid"], settings.get("password", ""), settings["timeout_s"], settings["attempts"], say)
    for attempt in range(1, ntp_attempts + 1):
        try:
            clock.sync()
            break
        except ClockError as e:
            say("clock: %s (attempt %d of %d)" % (e, attempt, ntp_attempts))
            if attempt == ntp_attempts:
                raise
            time.sleep_ms(2000 * attempt)
    say("clock: %s" % clock.format_utc(clock.unix_time()))
