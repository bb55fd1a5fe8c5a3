"""The device's JSON config on flash, validated once at start-up.

Errors name the file and the key; values of secret keys are never echoed.
"""

import json
import os

from .errors import ConfigError

DEFAULT_PATH = "/azure-iot/config.json"

# key: (type, default); default None means required.
_SCHEMA = {
    "hub_host": (str, ""),  # required, unless DPS assigns it (dps_id_scope)
    "device_id": (str, ""),  # required, unless DPS assigns it
    "module_id": (str, ""),
    "address": (str, ""),  # where to dial when it differs from hub_host (tests, proxies)
    "port": (int, 8883),
    "auth": (str, "x509"),
    "tls_profile": (str, "auto"),
    "tls_memory_file": (str, "/azure-iot/tls-profile.json"),  # "auto": the offer that worked, per hub ("" RAM only)
    "tls_verified_file": (str, "/azure-iot/tls-verified.bin"),  # chain signatures verified ("" RAM only)
    "tls_probe_s": (int, 604800),  # "auto": offer ECC again after this long on a hub where RSA worked
    "roots": ((str, list), "/azure-iot/roots"),
    "cert": (str, "/azure-iot/device.der"),
    "key": (str, "/azure-iot/device-key.der"),
    "api_version": (str, "2021-04-12"),
    "keepalive": (int, 60),
    "timeout": (int, 15),
    "model_id": (str, ""),  # IoT Plug and Play model (dtmi:...), sent at connect
    "max_message": (int, 16384),  # largest C2D/method/twin payload kept; larger are refused
    "sas_key_file": (str, "/azure-iot/sas.key"),  # auth "sas": the device key, base64, alone in a file
    "sas_ttl": (int, 3600),  # seconds a token is valid; renewed at 80 %
    "queue_size": (int, 32),  # QoS 1 telemetry kept while offline: messages ...
    "queue_bytes": (int, 16384),  # ... and payload bytes
    "queue_policy": (str, "drop-oldest"),  # or "drop-newest"
    "queue_file": (str, ""),  # e.g. "/azure-iot/queue.bin": the queue survives a reset
    "reconnect_min_ms": (int, 1000),  # backoff: first ceiling ...
    "reconnect_max_ms": (int, 100000),  # ... and cap
    "throttle_ms": (int, 30000),  # extra wait when the hub says it is busy (CONNACK 3)
    "max_fragment_length": (int, -1),  # TLS MFL: -1 the firmware's default, 0 off, 512..4096
    # Device Provisioning Service: with an ID scope, the hub and device id come from DPS (aziot.dps).
    "dps_id_scope": (str, ""),
    "dps_host": (str, "global.azure-devices-provisioning.net"),
    "dps_address": (str, ""),  # where to dial DPS when it differs from dps_host (tests, proxies)
    "dps_port": (int, 8883),
    "dps_registration_id": (str, ""),  # default: device_id (X.509: the certificate's CN)
    "dps_assignment_file": (str, "/azure-iot/dps-assignment.json"),  # where DPS sent the device
    "dps_timeout": (int, 60),  # seconds for the whole registration, polling included
    "dps_group_key_file": (str, ""),  # auth "sas": a symmetric key group's key; the device key is derived
}

AUTH_METHODS = ("x509", "sas")
QUEUE_POLICIES = ("drop-oldest", "drop-newest")
TLS_PROFILES = ("auto", "ecc", "rsa", "ecc+rsa", "compat")

# The hub drops a client after 1.5 x keepalive of silence, capped at 1767 s.
_MAX_KEEPALIVE = 1177


def _normal(path):
    """A path as the filesystem sees it: absolute (from the current directory), no "", "." or ".." parts."""
    if path[:1] != "/":
        path = os.getcwd() + "/" + path
    parts = []
    for part in path.split("/"):
        if part == "..":
            parts = parts[:-1]
        elif part not in ("", "."):
            parts.append(part)
    return "/" + "/".join(parts)


class Config:
    """Validated settings; attributes are the keys of the JSON object."""

    def __init__(self, values, source="config"):
        if not isinstance(values, dict):
            raise ConfigError("%s: expected a JSON object" % source)
        self._values = values
        self._source = source
        unknown = [k for k in values if k not in _SCHEMA]
        if unknown:
            raise ConfigError("%s: unknown key %r" % (source, sorted(unknown)[0]))
        for key, (kind, default) in _SCHEMA.items():
            if key in values:
                value = values[key]
                if not isinstance(value, kind) or isinstance(value, bool):
                    raise ConfigError("%s: key %r has the wrong type" % (source, key))
            elif default is None:
                raise ConfigError("%s: missing required key %r" % (source, key))
            else:
                value = default
            setattr(self, key, value)
        self._check(source)

    def _check(self, source):
        if self.dps_id_scope:
            if not (self.dps_registration_id or self.device_id):
                raise ConfigError("%s: DPS needs 'dps_registration_id' (or 'device_id')" % source)
            if not 0 < self.dps_port < 65536 or not 0 < self.dps_timeout <= 3600:
                raise ConfigError("%s: key 'dps_port' must be 1..65535 and 'dps_timeout' 1..3600 s" % source)
            if self.dps_group_key_file and self.auth != "sas":
                raise ConfigError("%s: key 'dps_group_key_file' needs auth 'sas'" % source)
        else:
            for key in ("hub_host", "device_id"):
                if key not in self._values:
                    raise ConfigError("%s: missing required key %r (or set 'dps_id_scope' to get it from DPS)"
                                      % (source, key))
            if not self.hub_host or not self.device_id:
                raise ConfigError("%s: 'hub_host' and 'device_id' must not be empty" % source)
        if self.auth not in AUTH_METHODS:
            raise ConfigError("%s: key 'auth' must be one of %s, not %r"
                              % (source, ", ".join(AUTH_METHODS), self.auth))
        if self.tls_profile not in TLS_PROFILES:
            raise ConfigError("%s: unknown cipher profile %r in key 'tls_profile' (use one of %s)"
                              % (source, self.tls_profile, ", ".join(TLS_PROFILES)))
        if self.tls_probe_s < 0:
            raise ConfigError("%s: key 'tls_probe_s' must not be negative" % source)
        if not 0 < self.port < 65536:
            raise ConfigError("%s: key 'port' must be 1..65535" % source)
        if not 0 <= self.keepalive <= _MAX_KEEPALIVE:
            raise ConfigError("%s: key 'keepalive' must be 0..%d s (the hub caps it)"
                              % (source, _MAX_KEEPALIVE))
        if not 0 < self.timeout <= 600:
            raise ConfigError("%s: key 'timeout' must be 1..600 s" % source)
        if self.model_id and not self.model_id.startswith("dtmi:"):
            raise ConfigError("%s: key 'model_id' must be a DTMI such as 'dtmi:com:example:Thermostat;1'"
                              % source)
        if self.max_message < 256:
            raise ConfigError("%s: key 'max_message' must be at least 256 bytes" % source)
        if not 60 <= self.sas_ttl <= 31536000:
            raise ConfigError("%s: key 'sas_ttl' must be 60 s .. 1 year" % source)
        if self.queue_policy not in QUEUE_POLICIES:
            raise ConfigError("%s: key 'queue_policy' must be one of %s, not %r"
                              % (source, ", ".join(QUEUE_POLICIES), self.queue_policy))
        if self.queue_size < 0 or self.queue_bytes < 0:
            raise ConfigError("%s: keys 'queue_size' and 'queue_bytes' must not be negative" % source)
        if not 0 < self.reconnect_min_ms <= self.reconnect_max_ms or self.throttle_ms < 0:
            raise ConfigError("%s: need 0 < 'reconnect_min_ms' <= 'reconnect_max_ms' and 'throttle_ms' >= 0"
                              % source)
        if self.max_fragment_length not in (-1, 0, 512, 1024, 2048, 4096):
            raise ConfigError("%s: key 'max_fragment_length' must be 512, 1024, 2048, 4096, 0 (off) "
                              "or -1 (the firmware's default)" % source)
        # The files the library writes must not be another file the device needs, nor be beside one (the .tmp
        # written before a rename), nor lie among the trusted roots.
        taken = [_normal(p) for p in (source, self.cert, self.key, self.sas_key_file, self.queue_file,
                                      DEFAULT_PATH, self.dps_assignment_file, self.dps_group_key_file,
                                      self.tls_memory_file, self.tls_verified_file) if p]
        for key in ("tls_memory_file", "tls_verified_file"):
            if not getattr(self, key):
                continue
            path = _normal(getattr(self, key))
            if isinstance(self.roots, list):  # a root file, or the .tmp written beside the file
                in_roots = any(_normal(r) in (path, path + ".tmp") for r in self.roots if isinstance(r, str))
            else:  # a file in the roots directory (every one is read as a root)
                in_roots = path.rsplit("/", 1)[0] == _normal(self.roots).rstrip("/")
            if (in_roots or taken.count(path) > 1 or path + ".tmp" in taken
                    or (path[-4:] == ".tmp" and path[:-4] in taken)):
                raise ConfigError("%s: key '%s' names a file the device needs for something else: %s"
                                  % (source, key, getattr(self, key)))
        if isinstance(self.roots, list) and not all(isinstance(p, str) for p in self.roots):
            raise ConfigError("%s: key 'roots' must be a directory or a list of file paths" % source)

    @property
    def dial_address(self):
        return self.address or self.hub_host

    @property
    def registration_id(self):
        return self.dps_registration_id or self.device_id

    def assigned(self, hub_host, device_id):
        """This config with the hub and device id DPS assigned."""
        values = dict(self._values)
        values["hub_host"], values["device_id"] = hub_host, device_id
        return Config(values, self._source)


def load(path=DEFAULT_PATH):
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        raise ConfigError("config file not found: %s" % path)
    except UnicodeError:
        raise ConfigError("config file is not UTF-8 text: %s" % path)
    try:
        values = json.loads(text)
    except ValueError:
        raise ConfigError("config file is not valid JSON: %s" % path)
    return Config(values, path)
