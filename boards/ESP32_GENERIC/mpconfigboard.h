// aziot firmware for ESP32 modules: the upstream board's settings.
#include "boards/ESP32_GENERIC/mpconfigboard.h"
