"""phaseboot (both interpreters): which slot a boot runs, trial boots, confirmation and every rollback rule.

Real files in a fresh folder through ``phaseboot.PosixFs``, as on a node's flash.
"""

import phaseboot

from node_fixtures import rmtree, tmpdir


def _fs():
    root = tmpdir("phaseboot")
    return root, phaseboot.PosixFs(root, fsync=False)


def _slot(fs, slot):
    fs.makedirs("fw/%s/lib/phasenode" % slot)
    fs.append("fw/%s/lib/phasenode/x.mpy" % slot, b"x")


def _boot(fs, power_on=False):
    path = []
    sel = phaseboot.select(fs, power_on=power_on, path=path)
    assert sel.booted()
    return sel, path


def test_no_state_boots_lib_and_writes_nothing():
    root, fs = _fs()
    try:
        sel, path = _boot(fs)
        assert (sel.slot, sel.trial, sel.rolled_back, path) == ("lib", False, 0, [])
        assert fs.size(phaseboot.STATE) == -1  # a normal boot writes nothing
        assert phaseboot.load(fs)["confirmed"] == "lib"
    finally:
        rmtree(root)


def test_trial_boots_once_then_confirmed_for_good():
    root, fs = _fs()
    try:
        _slot(fs, "a")
        phaseboot.activate(fs, "a", (1, 1, 0))
        path = ["", ".frozen", "lib"]
        sel = phaseboot.select(fs, power_on=False, path=path)
        assert sel.booted()
        assert (sel.slot, sel.trial) == ("a", True)
        # The slot first (ahead of frozen modules), and /lib gone: nothing of the other firmware can load.
        assert path == [fs.path("fw/a/lib"), "", ".frozen"], path
        assert phaseboot.load(fs)["boots"] == 1
        phaseboot.confirm(fs)
        st = phaseboot.load(fs)
        assert (st["confirmed"], st["trial"], st["boots"]) == ("a", None, 0)
        for power_on in (False, True):
            sel, path = _boot(fs, power_on)
            assert (sel.slot, sel.trial, sel.rolled_back) == ("a", False, 0)
        assert phaseboot.confirm(fs) is None  # no trial: nothing to confirm
    finally:
        rmtree(root)


def test_a_reset_before_confirmation_rolls_back_and_says_why():
    root, fs = _fs()
    try:
        _slot(fs, "a")
        phaseboot.activate(fs, "a", (1, 1, 0))
        _boot(fs)  # the trial boot
        sel, path = _boot(fs, power_on=False)  # a crash or watchdog reset: back to lib
        assert (sel.slot, sel.trial, sel.rolled_back, path) == ("lib", False, 1, [])
        st = phaseboot.load(fs)
        assert st["trial"] is None and st["confirmed"] == "lib"
        assert st["last"] == [1, (1 << 32) | (1 << 16)] and st["reported"] is False
        phaseboot.mark_reported(fs)
        assert phaseboot.load(fs)["reported"] is True
    finally:
        rmtree(root)


def test_power_cuts_during_a_trial_are_tolerated_three_boots():
    root, fs = _fs()
    try:
        _slot(fs, "b")
        phaseboot.activate(fs, "b", (2, 0, 0))
        for i in range(3):
            sel, _ = _boot(fs, power_on=True)
            assert sel.slot == "b" and sel.trial, i
        sel, _ = _boot(fs, power_on=True)
        assert sel.slot == "lib" and sel.rolled_back == 4  # RB_BOOTS
    finally:
        rmtree(root)


def test_a_trial_marked_failed_rolls_back_even_after_a_power_cut():
    root, fs = _fs()
    try:
        _slot(fs, "a")
        phaseboot.activate(fs, "a", (1, 1, 0))
        _boot(fs)
        phaseboot.fail(fs, 2)  # RB_HEALTH, set by the running trial at its deadline
        sel, _ = _boot(fs, power_on=True)
        assert (sel.slot, sel.rolled_back) == ("lib", 2)
        assert phaseboot.fail(fs, 2) is None  # no trial any more
    finally:
        rmtree(root)


def test_rollback_goes_to_the_confirmed_slot_not_to_lib():
    root, fs = _fs()
    try:
        _slot(fs, "a")
        _slot(fs, "b")
        phaseboot.activate(fs, "a", (1, 1, 0))
        _boot(fs)
        phaseboot.confirm(fs)
        phaseboot.activate(fs, "b", (1, 2, 0))
        assert _boot(fs)[0].slot == "b"
        sel, path = _boot(fs)
        assert (sel.slot, sel.rolled_back, path) == ("a", 1, [fs.path("fw/a/lib")])
        try:
            phaseboot.activate(fs, "a", (1, 3, 0))  # the confirmed slot is never overwritten by a trial
        except ValueError as e:
            assert "confirmed" in str(e)
        else:
            raise AssertionError("activating the confirmed slot must be refused")
    finally:
        rmtree(root)


def test_missing_slot_folder_boots_lib_and_a_missing_trial_rolls_back():
    root, fs = _fs()
    try:
        _slot(fs, "a")
        phaseboot.activate(fs, "a", (1, 1, 0))
        fs.rmtree("fw/a")
        sel, _ = _boot(fs)
        assert (sel.slot, sel.rolled_back) == ("lib", 3)  # RB_APP: nothing there to boot
    finally:
        rmtree(root)


def test_one_damaged_copy_of_the_state_is_survived_both_fall_back_to_lib():
    root, fs = _fs()
    try:
        _slot(fs, "a")
        phaseboot.activate(fs, "a", (1, 1, 0))
        _boot(fs)
        phaseboot.confirm(fs)
        data = fs.read(phaseboot.STATE, 1024)
        flipped = data.replace(b'"confirmed": "a"', b'"confirmed": "b"')
        assert flipped != data
        fs.write_atomic(phaseboot.STATE, flipped)  # parses, wrong checksum
        assert _boot(fs)[0].slot == "a"  # the backup copy
        fs.write_atomic("fw/state.bak.json", b"garbage")
        assert _boot(fs)[0].slot == "lib"  # neither readable: what deploy wrote
    finally:
        rmtree(root)


def test_after_main_fails_an_unconfirmed_trial_and_resets():
    root, fs = _fs()
    try:
        _slot(fs, "a")
        resets = []
        assert phaseboot.after_main(1, fs, lambda: resets.append(1)) is False  # no trial: nothing
        phaseboot.activate(fs, "a", (1, 1, 0))
        _boot(fs)
        assert phaseboot.after_main(0, fs, lambda: resets.append(1)) is False  # rc 0 (maintenance): nothing
        assert phaseboot.after_main(1, fs, lambda: resets.append(1)) is True and resets == [1]
        sel, _ = _boot(fs, power_on=True)
        assert (sel.slot, sel.rolled_back) == ("lib", 3)  # RB_APP
    finally:
        rmtree(root)


def test_the_rollback_numbers_are_the_wire_codes():
    # phaseboot imports nothing of phasecore (it runs before the slot holding it is chosen): its copies of
    # the rollback reasons are held to phasecore.codes here.
    from phasecore import codes

    ours = (phaseboot._RB_RESET, phaseboot._RB_APP, phaseboot._RB_BOOTS)
    assert ours == (codes.RB_RESET, codes.RB_APP, codes.RB_BOOTS)
