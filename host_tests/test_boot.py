"""Getting a board online before its first TLS connect: Wi-Fi settings, the clock, the boards' main.py."""

import json
import os

import pytest

from aziot_tools import paths


def load_errors(mpy, folder, names) -> str:
    """What aziot.wifi.load says of each settings file in folder (ACCEPTED when it takes one)."""
    return mpy("""
        from aziot import wifi
        from aziot.errors import ConfigError
        for name in %r:
            try:
                wifi.load(%r + "/" + name)
                print("ACCEPTED", name)
            except ConfigError as e:
                print(e)
    """ % (sorted(names), str(folder)))


def test_wifi_settings_errors_name_the_file_and_key_and_never_the_password(mpy, tmp_path):
    cases = {
        "missing.json": None,
        "notjson.json": "{ssid",
        "nossid.json": json.dumps({"password": "hunter2-secret"}),
        "badpass.json": json.dumps({"ssid": "lab", "password": 12345678}),
    }
    for name, text in cases.items():
        if text is not None:
            (tmp_path / name).write_text(text)
    out = load_errors(mpy, tmp_path, cases)
    base = str(tmp_path)
    assert out.splitlines() == [
        "%s/badpass.json: key 'password' must be a string" % base,
        "Wi-Fi settings not found: %s/missing.json" % base,
        "%s/nossid.json: key 'ssid' must be a non-empty string" % base,
        "Wi-Fi settings are not valid JSON: %s/notjson.json" % base,
    ]
    assert "hunter2" not in out


def test_online_on_a_port_without_wifi_says_so(mpy, tmp_path):
    (tmp_path / "wifi.json").write_text(json.dumps({"ssid": "lab", "password": "hunter2-secret"}))
    out = mpy("""
        from aziot import wifi
        from aziot.errors import NetworkError
        try:
            wifi.online(%r)
        except NetworkError as e:
            print("NetworkError", e)
    """ % str(tmp_path / "wifi.json"))
    assert out.strip() == ("NetworkError this port has no network module: it cannot join Wi-Fi (on the Unix port "
                           "the host's network is used as it is)")


@pytest.mark.parametrize("board", ["RPI_PICO_W", "ESP32_GENERIC"])
def test_board_main_compiles_and_brings_the_board_online_before_connecting(mpy, board):
    path = os.path.join(paths.ROOT, "boards", board, "main.py")
    source = open(path).read()
    assert mpy("compile(open(%r).read(), %r, 'exec'); print('OK')" % (path, path)).strip() == "OK"
    assert source.index("wifi.online()") < source.index("hub.connect()")


def test_provisioning_puts_wifi_settings_in_the_image_without_showing_the_password(tmp_path):
    import subprocess
    import sys

    from aziot_tools import flashimage

    (tmp_path / "wifi-pass").write_text("hunter2-secret\n")
    proc = subprocess.run([sys.executable, "-m", "aziot_tools.cli", "provision", "--state", str(tmp_path / "s"),
                           "--device-id", "w1", "--image", str(tmp_path / "w1.img"), "--wifi-ssid", "lab-2.4",
                           "--wifi-password-file", str(tmp_path / "wifi-pass")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "hunter2" not in proc.stdout + proc.stderr
    files = flashimage.read_image((tmp_path / "w1.img").read_bytes())
    assert json.loads(files["/azure-iot/wifi.json"]) == {"ssid": "lab-2.4", "password": "hunter2-secret"}


def test_wifi_settings_with_wrong_numbers_or_size_are_refused_by_key(mpy, tmp_path):
    cases = {"t.json": {"ssid": "lab", "timeout_s": "20"}, "a.json": {"ssid": "lab", "attempts": None},
             "f.json": {"ssid": "lab", "timeout_s": 2.5}, "big.json": {"ssid": "lab", "pad": "x" * 600}}
    for name, value in cases.items():
        (tmp_path / name).write_text(json.dumps(value))
    out = load_errors(mpy, tmp_path, cases)
    base = str(tmp_path)
    assert out.splitlines() == [
        "%s/a.json: key 'attempts' must be a whole number 1..20" % base,
        "Wi-Fi settings are larger than 512 bytes: %s/big.json" % base,
        "%s/f.json: key 'timeout_s' must be a whole number 1..600" % base,
        "%s/t.json: key 'timeout_s' must be a whole number 1..600" % base,
    ]
