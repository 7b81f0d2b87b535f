"""The node's state files at a trust boundary (flash that can be corrupted): only typed errors, short.

Every file the node reads back (config.json, the sequence bounds, the Pi's
sequence record, the operator lock, the relay state, the secret) is replaced
by hostile JSON: huge integers, long strings, deep nesting, every JSON type
in every field of a good file. Reading it raises only ``NodeError`` (a
``PhasecoreError``) or ``PhasecoreError``, with a short message, or gives a
value the loader checked.
"""

import json
import os

from hostile import assert_typed, variants
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node_fixtures import provision, rmtree, tmpdir
from phasecore.errors import PhasecoreError

# "HUGE" and "-HUGE" become integers of 5000 digits in the file (json.dumps cannot print them itself).
SAMPLES = ["HUGE", "-HUGE", 10**30, -1, 0.5, float("inf"), "x" * 5000, "", None, True, [], {}, [[[[1]]]]]


def _text(obj):
    return json.dumps(obj).replace('"-HUGE"', "-" + "9" * 5000).replace('"HUGE"', "9" * 5000)


def _loaders(store, config):
    seq_load, _ = store.sequence_storage("g0")
    pirx_load, _ = store.pi_seq_storage(0)
    op_load, _ = store.oplock_storage()
    return [store.load_config, lambda: store.read_secret(config), seq_load, pirx_load, op_load, store.load_relay]


def _files(root):
    return sorted(n for n in os.listdir(root) if n.endswith(".json") and not n.endswith(".tmp"))


def _prime(store, config):
    # Write every state file once, the way the node does.
    _, seq_save = store.sequence_storage("g0")
    seq_save(64)
    _, pirx_save = store.pi_seq_storage(0)
    pirx_save(12)
    _, op_save = store.oplock_storage()
    op_save(1)


def test_every_type_in_every_field_of_every_state_file():
    root = tmpdir("hostile")
    try:
        store, config = provision(root)
        _prime(store, config)
        names = _files(root)
        assert len(names) >= 5, names
        originals = {n: open(os.path.join(root, n)).read() for n in names}
        for name in names:
            good = json.loads(originals[name])
            bad_objects = variants(good, SAMPLES) + SAMPLES
            for bad in bad_objects:
                with open(os.path.join(root, name), "w") as f:
                    f.write(_text(bad))
                for load in _loaders(store, config):
                    assert_typed(load, PhasecoreError)
            with open(os.path.join(root, name), "w") as f:
                f.write(originals[name])
    finally:
        rmtree(root)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=5000), st.integers(0, 10))
def test_arbitrary_bytes_in_any_state_file(data, which):
    root = tmpdir("hostile")
    try:
        store, config = provision(root)
        _prime(store, config)
        names = _files(root)
        with open(os.path.join(root, names[which % len(names)]), "wb") as f:
            f.write(data)
        for load in _loaders(store, config):
            assert_typed(load, PhasecoreError)
    finally:
        rmtree(root)


def test_deep_nesting_in_a_state_file():
    root = tmpdir("hostile")
    try:
        store, config = provision(root)
        _prime(store, config)
        for name in _files(root):
            with open(os.path.join(root, name), "w") as f:
                f.write("[" * 2000 + "]" * 2000)
            for load in _loaders(store, config):
                assert_typed(load, PhasecoreError)
    finally:
        rmtree(root)
