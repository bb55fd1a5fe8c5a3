"""The device library's pure layers (protocol, certs, config), run in micropython.

Expected values come from independent sources: CPython's urllib, the
emulator's own MQTT parser, the `cryptography` package, and the Python SDK
capture (azure-iot-device 2.14.0).
"""

import datetime
import json
import urllib.parse

import pytest

from aziot_tools import pki
from aziot_tools.hub import mqttwire

SAMPLES = ["plain", "k 2", "v/2&x", "$.mid", "a=b", "caf\u00e9", "\u6e29\u5ea6", "100%", "~-._", "", "+ ?#"]


def run_json(mpy, code):
    return json.loads(mpy(code).strip().splitlines()[-1])


def test_url_encoding_matches_rfc3986_unreserved(mpy):
    got = run_json(mpy, """
        import json
        from aziot.protocol import url_encode, url_decode
        s = %s
        print(json.dumps([[url_encode(x), url_decode(url_encode(x))] for x in s]))
    """ % json.dumps(SAMPLES))
    assert [g[0] for g in got] == [urllib.parse.quote(s, safe="-._~") for s in SAMPLES]
    assert [g[1] for g in got] == SAMPLES


@pytest.mark.parametrize("bad", ["%", "%4", "%G0", "a%zz", "%+1", "%C3"])
def test_bad_percent_escapes_raise_protocol_error(mpy, bad):
    out = mpy("""
        from aziot.protocol import url_decode
        from aziot.errors import ProtocolError
        try:
            url_decode(%r)
            print("ACCEPTED")
        except ProtocolError as e:
            print("REFUSED", e)
    """ % bad)
    assert out.startswith("REFUSED"), out
    assert repr(bad) in out


def test_property_bag_round_trip_and_null_values(mpy):
    got = run_json(mpy, """
        import json
        from aziot.protocol import decode_properties, encode_properties
        bag = encode_properties([("k 2", "v/2&x"), ("e", ""), ("$.ct", "application/json")])
        print(json.dumps([bag, decode_properties(bag), decode_properties("flag&k=&x=1")]))
    """)
    assert got[0] == "k%202=v%2F2%26x&e=&%24.ct=application%2Fjson"
    assert got[1] == {"k 2": "v/2&x", "e": "", "$.ct": "application/json"}
    assert got[2] == {"flag": None, "k": "", "x": "1"}


def test_telemetry_topic_matches_the_python_sdk_capture(mpy):
    got = run_json(mpy, """
        import json
        from aziot import protocol as p
        system = ((p.PROP_MESSAGE_ID, "msg-1"), (p.PROP_CORRELATION_ID, "corr-1"),
                  (p.PROP_CONTENT_TYPE, "application/json"), (p.PROP_CONTENT_ENCODING, "utf-8"))
        print(json.dumps([
            p.telemetry_topic("dev1", "", [("alert", "hot"), ("k 2", "v/2&x")], system),
            p.telemetry_topic("dev1", "mod1", None, None),
            p.telemetry_topic("dev1", "", {"n": 7, "skip": None}, ((p.PROP_USER_ID, None),)),
        ]))
    """)
    assert got[0] == ("devices/dev1/messages/events/%24.mid=msg-1&%24.cid=corr-1&%24.ct=application%2Fjson"
                      "&%24.ce=utf-8&alert=hot&k%202=v%2F2%26x")
    assert got[1] == "devices/dev1/modules/mod1/messages/events/"
    assert got[2] == "devices/dev1/messages/events/n=7"


def test_application_properties_may_not_pose_as_system_properties(mpy):
    out = mpy("""
        from aziot.protocol import telemetry_topic
        try:
            telemetry_topic("d", "", {"$.mid": "x"})
        except ValueError as e:
            print("REFUSED", e)
    """)
    assert out.startswith("REFUSED application property names must be strings not starting with '$'")


def test_username_and_client_id(mpy):
    got = run_json(mpy, """
        import json
        from aziot.protocol import client_id, username
        print(json.dumps([
            username("h.azure-devices.net", "dev1"),
            username("h.azure-devices.net", "dev1", "mod1", "2020-09-30", [("model-id", "dtmi:com:ex:T;1")]),
            client_id("dev1"), client_id("dev1", "mod1")]))
    """)
    assert got == ["h.azure-devices.net/dev1/?api-version=2021-04-12",
                   "h.azure-devices.net/dev1/mod1/?api-version=2020-09-30&model-id=dtmi%3Acom%3Aex%3AT%3B1",
                   "dev1", "dev1/mod1"]


@pytest.mark.parametrize("password", [None, "SharedAccessSignature sr=x"])
@pytest.mark.parametrize("id_len", [5, 120, 16500])
def test_connect_packet_parses_with_the_emulator_parser(mpy, password, id_len):
    """id_len crosses the 1- to 2- and 2- to 3-byte remaining-length boundaries."""
    out = mpy("""
        import binascii
        from aziot.protocol import connect_packet
        pkt = connect_packet("d" * %d, "host/dev/?api-version=2021-04-12", %r, 300, True)
        print(binascii.hexlify(pkt).decode())
    """ % (id_len, password)).strip()
    raw = bytes.fromhex(out)

    async def reader():
        pos = 0

        async def read_exact(n):
            nonlocal pos
            pos += n
            return raw[pos - n:pos]
        return await mqttwire.read_packet(read_exact)

    import asyncio
    packet = asyncio.run(reader())
    assert packet.kind == mqttwire.CONNECT
    c = mqttwire.parse_connect(packet.body)
    assert (c.protocol_level, c.clean_session, c.keepalive) == (4, True, 300)
    assert c.client_id == "d" * id_len
    assert c.username == "host/dev/?api-version=2021-04-12"
    assert c.password == (password.encode() if password else None)
    assert len(raw) == 1 + len(mqttwire._remaining_length(len(packet.body))) + len(packet.body)


def test_connack_parsing(mpy):
    out = mpy("""
        from aziot.protocol import parse_connack
        from aziot.errors import ProtocolError
        print(parse_connack(b"\\x20\\x02\\x01\\x00"), parse_connack(b"\\x20\\x02\\x00\\x05"))
        try:
            parse_connack(b"\\x30\\x02\\x00\\x00")
        except ProtocolError as e:
            print("REFUSED", e)
    """)
    assert out.splitlines()[0] == "(True, 0) (False, 5)"
    assert out.splitlines()[1].startswith("REFUSED expected CONNACK")


def test_certificate_dates_and_thumbprint_match_cryptography(mpy, tmp_path):
    utc = datetime.timezone.utc
    certs = [
        pki.make_device_identity("a"),  # UTCTime
        pki.make_device_identity("b", not_before=datetime.datetime(1999, 12, 31, 23, 59, 58, tzinfo=utc),
                                 not_after=datetime.datetime(2061, 3, 1, 0, 0, 1, tzinfo=utc)),  # GeneralizedTime
        pki.make_server_pki("ecc").leaf,
    ]
    for i, ident in enumerate(certs):
        (tmp_path / ("c%d.der" % i)).write_bytes(ident.cert_der)
    got = run_json(mpy, """
        import json
        from aziot import certs
        out = []
        for i in range(%d):
            der = certs.read_der("%s/c%%d.der" %% i, "test")
            out.append([certs.validity(der), certs.thumbprint_sha256(der)])
        print(json.dumps(out))
    """ % (len(certs), tmp_path))
    for ident, (dates, thumb) in zip(certs, got):
        assert dates == [int(ident.cert.not_valid_before_utc.timestamp()),
                         int(ident.cert.not_valid_after_utc.timestamp())]
        assert thumb == ident.thumbprint_sha256


@pytest.mark.parametrize("values,message", [
    ({"hub_host": "h", "device_id": "d", "keepalive": 5000}, "key 'keepalive' must be 0..1177 s (the hub caps it)"),
    ({"hub_host": "h", "device_id": "d", "roots": ["/a", 3]}, "key 'roots' must be a directory or a list of file paths"),
    ({"hub_host": "h", "device_id": "d", "auth": "password"}, "key 'auth' must be one of x509, sas, not 'password'"),
    ({"hub_host": "h", "device_id": "d", "colour": "red"}, "unknown key 'colour'"),
    ({"hub_host": "h", "device_id": "d", "port": True}, "key 'port' has the wrong type"),
    ({"hub_host": "", "device_id": "d"}, "'hub_host' and 'device_id' must not be empty"),
])
def test_config_validation_names_the_key(mpy, values, message):
    out = mpy("""
        import json
        from aziot.config import Config
        try:
            Config(json.loads(%r), "cfg")
            print("ACCEPTED")
        except Exception as e:
            print(type(e).__name__, e)
    """ % json.dumps(values))
    assert out.strip() == "ConfigError cfg: " + message


def test_incoming_topics_as_the_emulator_writes_them(mpy):
    """parse_incoming on topics built by the emulator's code (C2D) and the hub's documented forms."""
    from aziot_tools.hub.c2d import C2DMessage

    c2d = C2DMessage("dev1", b"x", "m 1", {"k 2": "v/2&x", "flag": None}, {"$.cid": "c-1", "$.ct": None}).topic()
    topics = [c2d,
              "$iothub/methods/POST/reboot/?$rid=1f",
              "$iothub/twin/res/200/?$rid=7",
              "$iothub/twin/res/204/?$rid=8&$version=12",
              "$iothub/twin/res/429/?$rid=9",
              "$iothub/twin/PATCH/properties/desired/?$version=33"]
    got = run_json(mpy, """
        import json
        from aziot.protocol import parse_incoming, split_c2d_properties
        out = [list(parse_incoming(t, "dev1")) for t in %s]
        out.append(list(split_c2d_properties(out[0][1])))
        print(json.dumps(out))
    """ % json.dumps(topics))
    assert got[0] == ["c2d", {"$.mid": "m 1", "$.to": "/devices/dev1/messages/deviceBound", "$.cid": "c-1",
                              "iothub-ack": "none", "k 2": "v/2&x", "flag": None}]
    assert got[1:6] == [["method", "reboot", "1f"], ["twin-response", 200, "7", None],
                        ["twin-response", 204, "8", 12], ["twin-response", 429, "9", None], ["desired", 33]]
    assert got[6] == [{"$.mid": "m 1", "$.to": "/devices/dev1/messages/deviceBound", "$.cid": "c-1",
                       "iothub-ack": "none"}, {"k 2": "v/2&x", "flag": None}]


@pytest.mark.parametrize("topic", [
    "devices/other/messages/devicebound/x=1",  # another device's C2D
    "$iothub/methods/POST/reboot/",  # no $rid
    "$iothub/methods/POST//?$rid=1",  # no name
    "$iothub/twin/res/abc/?$rid=1",
    "$iothub/twin/res/200",
    "$iothub/twin/PATCH/properties/desired/?$version=x",
    "$iothub/twin/PATCH/properties/desired/",
    "devices/dev1/messages/devicebound/bad=%zz",
    "random/topic",
])
def test_topics_the_hub_never_sends_raise_protocol_error(mpy, topic):
    out = mpy("""
        from aziot.protocol import parse_incoming
        from aziot.errors import ProtocolError
        try:
            print("ACCEPTED", parse_incoming(%r, "dev1"))
        except ProtocolError as e:
            print("REFUSED", e)
    """ % topic)
    assert out.startswith("REFUSED "), out


def test_device_topics_are_what_the_emulator_accepts(mpy):
    from aziot_tools.hub import dialect

    got = run_json(mpy, """
        import json
        from aziot import protocol as p
        print(json.dumps([p.twin_get_topic("5"), p.twin_report_topic("6"), p.method_response_topic(200, "1f"),
                          p.c2d_subscription("dev1"), p.METHODS_SUBSCRIPTION, p.TWIN_RESPONSE_SUBSCRIPTION,
                          p.TWIN_DESIRED_SUBSCRIPTION]))
    """)
    assert dialect.parse_device_publish(got[0], "dev1") == ("twin-get", "5")
    assert dialect.parse_device_publish(got[1], "dev1") == ("twin-reported", "6")
    assert dialect.parse_device_publish(got[2], "dev1") == ("method-response", 200, "1f")
    assert set(got[3:]) == dialect.allowed_filters("dev1") - {dialect.C2D_WILDCARD_FILTER}
