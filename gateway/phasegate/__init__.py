"""phasegate: the transformer Pi controller and the LoRa gateway relay (CPython, asyncio)."""
