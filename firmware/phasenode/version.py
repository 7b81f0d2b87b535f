"""The firmware's release: what the heartbeat's ``fw`` field says and what a firmware update is checked against.

``phasekit release build`` writes this module anew into every bundle with the
bundle's own version and minimum (docs/ota.md), so the code that runs always
knows which release it is; the copy in the checkout is what ``phasekit
deploy`` installs. ``MIN_VERSION`` is the oldest release this one may replace
and the floor below which no update may replace it (``phasecore.ota.check_versions``).
"""

VERSION = (0, 1, 0)
MIN_VERSION = (0, 1, 0)
