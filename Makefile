# aziot — Azure IoT Hub for MicroPython. `make help` lists the targets.

PYTHON      ?= python3
VENV        ?= .venv
HUB_PORT    ?= 8883
HUB_STATE   ?= build/hub
HUB_MODE    ?= standard
PYTEST_ARGS ?=
MPY_DIR     ?=
BOARD       ?= RPI_PICO_W
PORT        ?=
DEB_PACKAGES = mosquitto openssl golang-go valgrind

BIN   = $(VENV)/bin
STAMP = $(VENV)/.aziot-setup

.PHONY: help setup deb-packages demo test hub bench unix-mfl firmware flash clean

help:  ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'
	@echo "  variables: MICROPYTHON=/path/to/micropython (default: the venv's Unix port), HUB_PORT, HUB_STATE,"
	@echo "             HUB_MODE=standard|preview (RSA chain, MFL ignored | ECC chain, MFL honoured),"
	@echo "             MPY_DIR=<MicroPython checkout>, BOARD=RPI_PICO_W|ESP32_GENERIC, PORT=<serial port or RPI-RP2 drive>"

setup: $(STAMP) build/unix-lib/umqtt/simple.py deb-packages  ## venv, pinned deps, Unix port, umqtt.simple, Debian packages

deb-packages:
	@for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(STAMP): tools/requirements.txt tools/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -r tools/requirements.txt
	$(BIN)/pip install -q --no-deps -e tools
	touch $@

build/unix-lib/umqtt/simple.py: $(STAMP) tools/aziot_tools/deps.py
	$(BIN)/python -c "from aziot_tools import device; device.prepare_unix_lib()"
	touch $@

demo: setup  ## a device on a standard hub (telemetry, method, twin, C2D), then on a preview hub
	$(BIN)/aziot demo

test: setup  ## the host test suite (device code runs in the real micropython binary)
	$(BIN)/pytest host_tests $(PYTEST_ARGS)

hub: setup  ## run the IoT Hub emulator in the foreground (HUB_PORT, HUB_STATE, HUB_MODE)
	$(BIN)/aziot hub --state $(HUB_STATE) --port $(HUB_PORT) --mode $(HUB_MODE)

bench: setup  ## connect cost (instructions, bytes, heap), QoS 1 beside the official SDK, sizes; build/bench/
	$(BIN)/aziot bench

unix-mfl: setup  ## Unix-port builds of the board TLS config (MFL hook, buffers), from MPY_DIR
	@$(MAKE) --no-print-directory deb-packages DEB_PACKAGES="libffi-dev gcc-multilib"
	$(BIN)/aziot firmware unix-mfl --mpy-dir "$(MPY_DIR)"

firmware: setup  ## board firmware with aziot frozen in (BOARD, MPY_DIR)
	$(BIN)/aziot firmware build --board $(BOARD) --mpy-dir "$(MPY_DIR)"

flash: setup  ## write the built firmware to a board (BOARD, PORT)
	$(BIN)/aziot firmware flash --board $(BOARD) --port "$(PORT)"

clean:  ## remove build outputs (keeps the venv)
	rm -rf build
