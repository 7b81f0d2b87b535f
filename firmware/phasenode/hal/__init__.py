"""Hardware abstraction: thin wrappers giving drivers the machine.UART subset on the ESP32 and on a PC."""
