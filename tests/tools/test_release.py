"""phasekit release: keys, reproducible bundles of the real firmware, signatures checked both ways.

pyca/cryptography (OpenSSL) makes the keys and signs, as on the release
machine; the node's own verifier (``phasecore.ota.verify_signature`` over
``phasecore.ed25519``) must accept exactly what it signs and refuse every
change with a typed reason; and pyca verifies what ``phasekit release
sign`` wrote, so the two implementations agree in both directions.
"""

import os
import stat
import subprocess
import sys

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from phasecore import codes, ota
from phasecore.errors import OtaRefused
from phasekit import release
from phasekit.testing import micropython


def _public(key):
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def phasekit(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "phasekit.cli", *args], capture_output=True, text=True, cwd=cwd)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    d = tmp_path_factory.mktemp("release")
    key = d / "k" / "release.key"
    pub = release.generate_key(key)
    a, b = d / "a.pkb", d / "b.pkb"
    release.build(a, "0.3.7", "0.1.0", "esp32")
    release.build(b, "0.3.7", "0.1.0", "esp32")
    return d, key, pub, a, b


def test_the_key_pair_private_0600_never_printed_never_overwritten(tmp_path):
    p = phasekit("release", "key", str(tmp_path / "r.key"))
    assert p.returncode == 0, p.stderr
    mode = stat.S_IMODE(os.stat(tmp_path / "r.key").st_mode)
    assert mode == 0o600
    pem = (tmp_path / "r.key").read_bytes()
    key = serialization.load_pem_private_key(pem, None)
    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    assert raw.hex() not in p.stdout and b"PRIVATE" not in p.stdout.encode()
    pub = (tmp_path / "r.key.pub").read_text().strip()
    assert pub in p.stdout and len(pub) == 64
    again = phasekit("release", "key", str(tmp_path / "r.key"))
    assert again.returncode == 1 and "never overwritten" in again.stderr and "Traceback" not in again.stderr
    assert (tmp_path / "r.key").read_bytes() == pem
    os.chmod(tmp_path / "r.key", 0o644)
    with pytest.raises(release.ReleaseError, match="readable by group or others"):
        release.load_private_key(tmp_path / "r.key")


def test_builds_are_reproducible_and_carry_the_firmware_the_manifests_name(built):
    _d, _key, _pub, a, b = built
    data = a.read_bytes()
    assert data == b.read_bytes()
    head = ota.parse_head(data)
    m = head.manifest
    assert (m["version"], m["min_version"], m["target"], m["mpy"]) == ((0, 3, 7), (0, 1, 0), "esp32", 6)
    assert len(head.manifest_bytes) < 128 and not head.signature
    paths = [p for p, _s, _h in head.files]
    assert "lib/phasenode/ota.mpy" in paths and "lib/phasecore/ed25519.mpy" in paths
    assert "lib/phasenode/hal/esp32.mpy" in paths and "lib/phasenode/hal/host.mpy" not in paths
    assert not any(p.endswith((".py", "boot.mpy", "main.mpy", "phaseboot.mpy")) for p in paths)


def test_the_generated_version_module_runs_on_micropython(built, tmp_path):
    _d, _key, _pub, a, _b = built
    data = a.read_bytes()
    head = ota.parse_head(data)
    at = head.files_at
    for p, size, _h in head.files:
        if p == "lib/phasenode/version.mpy":
            (tmp_path / "version.mpy").write_bytes(data[at : at + size])
        at += size
    r = micropython.run(["-c", "import version; print(version.VERSION, version.MIN_VERSION)"], extra_path=[tmp_path])
    assert r.stdout.strip() == "(0, 3, 7) (0, 1, 0)", r.stdout + r.stderr


def test_sign_then_both_implementations_verify_and_refuse_alike(built, tmp_path):
    d, key, pub, a, _b = built
    out = tmp_path / "s.pkb"
    head = release.sign(a, key, out)
    # pyca/cryptography (OpenSSL) verifies what phasekit signed...
    Ed25519PublicKey.from_public_bytes(pub).verify(head.signature, head.manifest_bytes)
    # ...and the node's verifier accepts it, under the key id of that key.
    ota.verify_signature(head.manifest_bytes, head.kid, head.signature, pub)
    assert head.kid == ota.key_id(pub)
    assert release.check(out, pub).ok
    for i in (0, 31, 32, 63):
        bad = bytearray(head.signature)
        bad[i] ^= 0x20
        with pytest.raises(InvalidSignature):
            Ed25519PublicKey.from_public_bytes(pub).verify(bytes(bad), head.manifest_bytes)
        with pytest.raises(OtaRefused) as e:
            ota.verify_signature(head.manifest_bytes, head.kid, bytes(bad), pub)
        assert e.value.reason == codes.R_OTA_BAD_SIGNATURE
    p = phasekit("release", "show", str(out), "--release-key", str(d / "k" / "release.key.pub"))
    assert p.returncode == 0 and "signature and every file verified" in p.stdout, p.stdout
    other = (
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    c = release.check(out, other)
    assert not c.ok and c.problem.reason == codes.R_OTA_WRONG_KEY
    p = phasekit("release", "show", str(out), "--release-key", other.hex())
    assert p.returncode == 1 and "OTA_WRONG_KEY" in p.stdout


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=0, max_size=256), st.integers(0, 63), st.integers(0, 7))
def test_the_node_verifier_agrees_with_pyca_on_random_messages(message, at, bit):
    key = Ed25519PrivateKey.generate()
    pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    sig = key.sign(message)
    ota.verify_signature(message, ota.key_id(pub), sig, pub)
    bad = bytearray(sig)
    bad[at] ^= 1 << bit
    try:
        Ed25519PublicKey.from_public_bytes(pub).verify(bytes(bad), message)
        pyca_ok = True
    except InvalidSignature:
        pyca_ok = False
    try:
        ota.verify_signature(message, ota.key_id(pub), bytes(bad), pub)
        node_ok = True
    except OtaRefused as e:
        assert e.reason == codes.R_OTA_BAD_SIGNATURE
        node_ok = False
    assert pyca_ok == node_ok is False


def test_a_public_key_no_node_should_trust_is_refused_where_it_is_provisioned(tmp_path):
    identity = bytes([1]) + bytes(31)  # the neutral point: it would accept forgeries
    with pytest.raises(release.ReleaseError, match="small order"):
        release.check_public_key(identity)
    with pytest.raises(release.ReleaseError, match="not a point|canonical"):
        release.check_public_key(bytes([0xFF]) * 32)
    with pytest.raises(release.ReleaseError, match="neither 64 hex digits nor a readable file"):
        release.read_public_key("nothing-here")
    good = _public(Ed25519PrivateKey.generate())
    assert release.read_public_key(good.hex()) == good
    (tmp_path / "p.pub").write_text(good.hex() + "\n")
    assert release.read_public_key(tmp_path / "p.pub") == good


def test_provision_writes_the_release_key_the_node_reads(tmp_path):
    from phasenode import persist

    (tmp_path / "site.key").write_text(bytes(range(32)).hex())
    os.chmod(tmp_path / "site.key", 0o600)
    pub = _public(Ed25519PrivateKey.generate())
    (tmp_path / "r.pub").write_text(pub.hex())
    p = phasekit(
        "provision",
        "--site-key",
        str(tmp_path / "site.key"),
        "--address",
        "9",
        "--node-id",
        "n9",
        "--board",
        "host-virtual",
        "--home-phase",
        "A",
        "--release-key",
        str(tmp_path / "r.pub"),
        "--out",
        str(tmp_path / "n9"),
    )
    assert p.returncode == 0, p.stderr
    cfg = persist.Store(str(tmp_path / "n9"), fsync=False).load_config()
    assert cfg.release_key == pub
    p = phasekit(
        "provision",
        "--site-key",
        str(tmp_path / "site.key"),
        "--address",
        "9",
        "--node-id",
        "n9",
        "--board",
        "host-virtual",
        "--home-phase",
        "A",
        "--out",
        str(tmp_path / "n9b"),
    )
    assert p.returncode == 0 and "will refuse firmware updates" in p.stdout
    assert persist.Store(str(tmp_path / "n9b"), fsync=False).load_config().release_key is None


def test_release_build_refuses_what_a_node_could_not_use(tmp_path):
    with pytest.raises(release.ReleaseError, match="above"):
        release.build(tmp_path / "x.pkb", "0.1.0", "0.2.0")
    with pytest.raises(release.ReleaseError, match="MAJOR.MINOR.PATCH"):
        release.build(tmp_path / "x.pkb", "1.2", None)
    with pytest.raises(release.ReleaseError, match="target"):
        release.build(tmp_path / "x.pkb", "1.2.3", None, "stm32")
