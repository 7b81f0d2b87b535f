"""Device drivers of the node: PZEM-004T meter over Modbus RTU, SX127x LoRa radio. Import the module you need."""
