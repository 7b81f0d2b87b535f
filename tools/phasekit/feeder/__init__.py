"""Feeder days for the balancing benchmark: the folder format, a seeded generator, the replay.

* ``phasekit.feeder.format``   -- read/validate/write a feeder folder (docs/feeder-format.md)
* ``phasekit.feeder.generate`` -- seeded synthetic feeders (100-250 houses, solar, three-phase houses)
* ``phasekit.balance.replay`` -- replay a day minute by minute with a strategy in the loop
* ``phasekit.feeder.ieee_eulv`` -- convert the IEEE European LV test feeder's CSV folder
"""
