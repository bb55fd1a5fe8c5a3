# main.py for a Raspberry Pi Pico W with the aziot firmware (or the library installed in /lib).
# Files on the board: /azure-iot/wifi.json ({"ssid": ..., "password": ...}),
# /azure-iot/config.json and the certificates beside it (aziot provision writes them).
import time

import machine

from aziot import wifi
from aziot.errors import AziotError
from aziot.hub import HubClient

led = machine.Pin("LED", machine.Pin.OUT)
sensor = machine.ADC(4)  # the RP2040's temperature sensor


def temperature_c():
    volts = sensor.read_u16() * 3.3 / 65535
    return round(27 - (volts - 0.706) / 0.001721, 1)  # RP2040 datasheet, section 4.9.5


wifi.online()  # Wi-Fi, then NTP: the hub's certificate cannot be checked with the clock at 2021
hub = HubClient.from_flash()
hub.on_link = lambda event, detail: print("link", event, detail)
hub.on_method("blink", lambda name, payload: led.toggle())
hub.connect()
next_reading = time.ticks_ms()
while True:
    if time.ticks_diff(time.ticks_ms(), next_reading) >= 0:
        hub.send_telemetry('{"temperature": %s}' % temperature_c())  # queued while the link is down
        next_reading = time.ticks_add(next_reading, 60000)
    try:
        hub.poll(1000)  # keeps the link, reconnects, runs the handlers
    except AziotError as e:
        print("poll:", e)
