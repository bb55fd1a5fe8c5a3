"""HubClient: the device's connection to Azure IoT Hub.

    from aziot.hub import HubClient
    hub = HubClient.from_flash()        # /azure-iot/config.json
    hub.connect()
    hub.send_telemetry(b'{"t": 21.5}', {"alert": "hot"})
    hub.disconnect()
"""

from . import certs, clock, protocol, tlsconf
from .config import DEFAULT_PATH, Config, load as load_config
from .errors import TlsError
from .mqtt import MqttSession, open_socket

_PROFILE_ORDER = {"ecc": ("ecc",), "rsa": ("rsa",), "compat": ("compat",),
                  # The hub shows its ECC chain only to ECDSA-only offers;
                  # a hub without one answers that offer with an alert.
                  "ecc+rsa": ("ecc", "rsa")}


class HubClient:
    def __init__(self, config, clock_now=clock.unix_time):
        if isinstance(config, dict):
            config = Config(config)
        self.config = config
        self._now = clock_now
        self._session = None
        self._root_files = None
        self.tls_profile = None  # the profile of the live connection
        self.tls_cipher = None  # its negotiated suite and version, as mbedTLS names them
        self.tls_version = None
        self._next_message_id = 1

    @classmethod
    def from_flash(cls, path=DEFAULT_PATH):
        return cls(load_config(path))

    def _load_identity(self):
        """(cert, key) DER from flash, read at each connect rather than held in RAM between."""
        cfg = self.config
        if self._root_files is None:
            self._root_files = certs.root_files(cfg.roots)
        cert_der = certs.read_der(cfg.cert, "device certificate")
        now = self._now()
        if clock.is_set(now):
            certs.check_current(cert_der, now, cfg.cert)
        return cert_der, certs.read_der(cfg.key, "device key")

    def connect(self):
        """Open TLS, log in with the X.509 identity; returns the CONNACK session-present flag."""
        cfg = self.config
        cert_der, key_der = self._load_identity()
        if self._session is not None:  # one connection per identity: the hub would drop one anyway
            self._session.close()
            self._session = None
        where = "%s (%s:%d)" % (cfg.hub_host, cfg.dial_address, cfg.port)
        profiles = _PROFILE_ORDER[cfg.tls_profile]
        for i, profile in enumerate(profiles):
            ctx = tlsconf.make_context(profile, self._root_files, cert_der, key_der, cfg.cert, cfg.key)
            sock = open_socket(cfg.dial_address, cfg.port, cfg.timeout)
            try:
                stream = tlsconf.handshake(sock, ctx, cfg.hub_host, where + " with profile '%s'" % profile)
            except TlsError as e:
                sock.close()
                if e.code == tlsconf.ERR_FATAL_ALERT and i + 1 < len(profiles):
                    continue  # no ECC certificate on this hub: try the next profile
                raise
            self.tls_profile = profile
            if hasattr(stream, "cipher"):  # not on every firmware
                self.tls_cipher, self.tls_version = stream.cipher()
            break
        self._session = MqttSession(
            stream,
            protocol.client_id(cfg.device_id, cfg.module_id),
            protocol.username(cfg.hub_host, cfg.device_id, cfg.module_id, cfg.api_version),
            None,  # X.509: no password
            cfg.keepalive,
        )
        return self._session.session_present

    def send_telemetry(self, payload, properties=None, message_id=None, correlation_id=None,
                       content_type="application/json", content_encoding="utf-8", qos=1):
        """Publish one device-to-cloud message; with QoS 1, returns once the hub acknowledged it.

        message_id defaults to a per-client counter so the cloud side can
        spot duplicates. content_type/encoding default to what IoT Hub
        message routing needs to query a JSON body.
        """
        if self._session is None:
            raise RuntimeError("send_telemetry before connect")
        if message_id is None:
            message_id = str(self._next_message_id)
            self._next_message_id += 1
        system = (
            (protocol.PROP_MESSAGE_ID, message_id),
            (protocol.PROP_CORRELATION_ID, correlation_id),
            (protocol.PROP_CONTENT_TYPE, content_type),
            (protocol.PROP_CONTENT_ENCODING, content_encoding),
        )
        topic = protocol.telemetry_topic(self.config.device_id, self.config.module_id, properties, system)
        if isinstance(payload, str):
            payload = payload.encode()
        self._session.publish(topic.encode(), payload, qos)
        return message_id

    def disconnect(self):
        if self._session is not None:
            self._session.disconnect()
            self._session = None
