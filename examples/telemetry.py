"""Telemetry sensor: send a few readings to IoT Hub with X.509 authentication.

Reads /azure-iot/config.json and the certificates beside it (see README).
"""

import json
import sys
import time

from aziot.hub import HubClient

COUNT = int(sys.argv[1]) if len(sys.argv) > 1 else 3

hub = HubClient.from_flash()
hub.connect()
print("connected to", hub.config.hub_host, "with TLS profile", hub.tls_profile, hub.tls_version or "", hub.tls_cipher or "",
      "max fragment length", hub.tls_max_fragment_length or "none")
for i in range(COUNT):
    reading = {"temperature": 21.0 + i / 10, "seq": i}
    mid = hub.send_telemetry(json.dumps(reading), {"sensor": "bme280", "alert": "hot" if i == COUNT - 1 else "none"})
    print("sent message", mid, reading)
    time.sleep_ms(100)
hub.disconnect()
print("disconnected")
