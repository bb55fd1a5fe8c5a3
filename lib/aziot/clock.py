"""Wall-clock time in Unix seconds on every port.

ESP32's MicroPython epoch is 2000-01-01, Pico W's and Unix's 1970-01-01:
detect it rather than hard-code it.
"""

import time

_EPOCH_OFFSET = 946684800 if time.gmtime(0)[0] == 2000 else 0

# A board whose RTC was never set reads a time in 2000 or 1970; anything
# before this (2024-01-01) cannot be a real "now" for this library.
_PLAUSIBLE_AFTER = 1704067200


def unix_time():
    return time.time() + _EPOCH_OFFSET


def is_set(now=None):
    return (unix_time() if now is None else now) >= _PLAUSIBLE_AFTER


def days_from_civil(y, m, d):
    """Days since 1970-01-01 for a proleptic Gregorian date (H. Hinnant's algorithm)."""
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def format_utc(t):
    """ISO 8601 for error messages (Unix seconds in)."""
    tm = time.gmtime(t - _EPOCH_OFFSET)
    return "%04d-%02d-%02dT%02d:%02d:%02dZ" % tm[:6]


def sync(host="pool.ntp.org"):
    """Set the RTC from NTP on ports that have `ntptime` (ESP32, Pico W), after Wi-Fi is up.

    Raises ClockError when the port has no ntptime or the server does not answer.
    """
    from .errors import ClockError, oserror_text

    try:
        import ntptime
    except ImportError:
        raise ClockError("this port has no ntptime: set the clock another way (RTC, GPS, the hub's time)")
    ntptime.host = host
    try:
        ntptime.settime()
    except (OSError, OverflowError) as e:
        raise ClockError("NTP sync with %s failed: %s" % (host, oserror_text(e) if isinstance(e, OSError) else e))
