"""LoRa links of the transformer Pi: radio drivers and the simulated channel."""
