"""The package imports on both interpreters."""

from phasecore import errors
from portable import raises


def test_errors_are_value_errors():
    assert issubclass(errors.CBORDecodeError, ValueError)
    assert issubclass(errors.ReplayError, errors.SealError)


def test_raises_helper_reports_wrong_type():
    e = raises(AssertionError, raises, KeyError, lambda: 1 / 0)
    assert "ZeroDivisionError" in str(e)
