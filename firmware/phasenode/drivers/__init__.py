"""Device drivers of the node: PZEM-004T meter over Modbus RTU. Import the module you need.

The LoRa radio driver is shared with the transformer Pi: ``phaseradio.sx127x``.
"""
