"""A device the cloud steers: LED from desired properties, direct methods, C2D messages.

  desired "led": "on" | "off"   -> the LED follows, reported "led" confirms it
  method "blink" {"times": n}   -> 200 {"blinked": n}
  method "reboot"               -> 200, then machine.reset() (on the Unix port: the app ends)
  C2D messages                  -> printed with their properties

Reads /azure-iot/config.json and the certificates beside it (see README).
"""

import json

from aziot.hub import HubClient

try:
    from machine import Pin

    _pin = Pin("LED", Pin.OUT)  # Pico W; on ESP32 boards use the LED's GPIO number
except (ImportError, ValueError, TypeError):
    _pin = None  # the Unix port has no LED: the printed line stands in for it

hub = HubClient.from_flash()
rebooting = []


def set_led(state):
    if _pin is not None:
        _pin.value(state == "on")
    print("led", state)


def on_desired(patch, version):
    led = patch.get("led")
    if led in ("on", "off"):
        set_led(led)
        print("reported led=%s, reported version %d (desired version %d)"
              % (led, hub.report({"led": led}), version))


def blink(name, payload):
    times = json.loads(payload).get("times", 1) if payload else 1
    for _ in range(times):
        set_led("on")
        set_led("off")
    return 200, {"blinked": times}


def reboot(name, payload):
    rebooting.append(True)
    return 200, {"rebooting": True}


def on_c2d(msg):
    print("C2D message", msg.message_id, "properties", msg.properties, "body", bytes(msg.payload).decode())


hub.on_desired(on_desired)
hub.on_method("blink", blink)
hub.on_method("reboot", reboot)
hub.on_c2d(on_c2d)
hub.connect()
print("connected, waiting for the cloud")
while not rebooting:
    hub.poll(500)
hub.disconnect()
print("reboot requested")
try:
    import machine

    machine.reset()
except (ImportError, AttributeError):
    pass
