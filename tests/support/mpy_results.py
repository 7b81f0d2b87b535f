"""Where the MicroPython parity test leaves its counts for the closing summary."""

import pytest

MPY_RESULTS = pytest.StashKey[list]()
