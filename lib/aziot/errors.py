"""The library's exceptions: one per layer, each message names what to fix."""


class AziotError(Exception):
    pass


# MicroPython uses Linux errno numbers on every port; -2 is getaddrinfo's EAI_NONAME.
_ERRNO_NAMES = {12: "out of memory", 104: "connection reset", 110: "timed out", 111: "connection refused",
                113: "no route to host", 107: "not connected", -2: "host name not found",
                # MBEDTLS_ERR_SSL_BAD_INPUT_DATA on a read: a record larger than the receive buffer
                -28928: "a TLS record larger than this firmware's receive buffer arrived "
                        "(enable max_fragment_length, or build with a larger MBEDTLS_SSL_IN_CONTENT_LEN)"}


def oserror_text(err):
    """'timed out' rather than '[Errno 110] ETIMEDOUT' or a bare 110 in messages."""
    code = err.args[0] if err.args else None
    name = _ERRNO_NAMES.get(code)
    return name if name else (" ".join(str(a) for a in err.args) or type(err).__name__)


class ConfigError(AziotError):
    """The device config is missing, not JSON, or has a wrong key."""


class CertificateError(AziotError):
    """A root, device certificate or key is missing, corrupt or out of date."""


class TlsError(AziotError):
    """The TLS handshake failed; the message carries the mbedTLS reason."""

    def __init__(self, message, code=0):
        super().__init__(message)
        self.code = code  # the mbedTLS error code, 0 when there is none


class ConnectionRefused(AziotError):
    """The hub answered CONNECT with a non-zero CONNACK code."""

    def __init__(self, code, meaning):
        super().__init__("hub refused the connection: CONNACK %d (%s)" % (code, meaning))
        self.code = code


class ProtocolError(AziotError):
    """Bytes from the network that do not follow MQTT or the hub's dialect."""


class ConnectionLost(AziotError):
    """The link to the hub broke or was closed by the hub."""


class MessageTooLarge(AziotError):
    """The hub sent a message larger than the configured max_message; it was skipped whole."""


class RequestFailed(AziotError):
    """The hub answered a twin request with a status other than success."""

    def __init__(self, what, status):
        super().__init__("hub answered %d to the %s" % (status, what))
        self.status = status


class RequestTimeout(AziotError):
    """The hub did not answer a request in time."""


class QueueFull(AziotError):
    """The offline queue could not keep a message; the drop is counted."""


class ClockError(AziotError):
    """The clock is not set, and a SAS token or a certificate check needs it."""


class NetworkError(AziotError):
    """The board could not get onto the network (Wi-Fi) before connecting to the hub."""


class ProvisioningError(AziotError):
    """DPS refused or failed the registration: its status, error code and message."""

    def __init__(self, message, status=None, error_code=None):
        super().__init__(message)
        self.status = status  # the registration status ("failed", "disabled", ...) or the HTTP-like code
        self.error_code = error_code  # DPS's errorCode (e.g. 401002), when it sent one
