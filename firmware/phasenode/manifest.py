# MicroPython manifest: the modules of phasenode for a chip (default) or for the virtual board (host=True).
#
# The chip gets the ESP32 HAL (machine.UART, Pin, SPI, WDT); the virtual board,
# the MicroPython unix port, gets the host HAL with its file-descriptor UARTs
# and simulated relay board instead. hal/uart_host.py (pyserial) is for
# in-process CPython runs only and goes to neither. A manifest resolves paths
# against its own folder: base_path ".." is firmware/.

# ruff: noqa: F821  (options and package are defined by the manifest tool that runs this file)

options.defaults(host=False)

_COMMON = ("__init__.py", "app.py", "board.py", "checks.py", "compat.py", "errors.py", "events.py", "link_lora.py",
           "link_rs485.py", "ota.py", "persist.py", "relay.py", "session.py", "settings.py", "startup.py", "version.py",
           "drivers/__init__.py", "drivers/modbus_rtu.py", "drivers/pzem.py", "hal/__init__.py")
_CHIP = ("hal/esp32.py", "hal/uart_esp32.py")
_HOST = ("hal/host.py", "hal/pin_host.py", "hal/uart_fd.py")

package("phasenode", files=_COMMON + (_HOST if options.host else _CHIP), base_path="..")
