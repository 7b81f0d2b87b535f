"""phasenode: the ESP32 home-node firmware (HAL, drivers, links, relay control), MicroPython and CPython."""
