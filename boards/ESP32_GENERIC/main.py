# main.py for an ESP32 module with the aziot firmware (or the library installed in /lib).
# Files on the board: /azure-iot/wifi.json ({"ssid": ..., "password": ...}),
# /azure-iot/config.json and the certificates beside it (aziot provision writes them).
import gc
import time

import esp32

from aziot import wifi
from aziot.errors import AziotError
from aziot.hub import HubClient

wifi.online()  # Wi-Fi, then NTP: the hub's certificate cannot be checked with the clock at 2000
hub = HubClient.from_flash()
hub.on_link = lambda event, detail: print("link", event, detail)
hub.connect()
next_reading = time.ticks_ms()
while True:
    if time.ticks_diff(time.ticks_ms(), next_reading) >= 0:
        hub.send_telemetry('{"mcu_temperature": %d, "heap_free": %d}'
                           % (esp32.mcu_temperature(), gc.mem_free()))  # queued while the link is down
        next_reading = time.ticks_add(next_reading, 60000)
    try:
        hub.poll(1000)  # keeps the link, reconnects, runs the handlers
    except AziotError as e:
        print("poll:", e)
