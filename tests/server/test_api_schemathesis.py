"""Property-based API test: schemathesis drives every operation of /openapi.json against the running app.

Each operation is called with generated inputs (valid and invalid) and a
credential of a role that holds its permission (``x-permission`` in the
document), and every response is checked: no 5xx, the status code and the
content type documented, the body valid against its schema, the documented
headers present. The app is the real one (``phaseserver.app.build`` over a
real SQLite store with two tenants' data). The one thing to know: generated
requests really change things (accounts, keys, tenants, transformer
settings); the credentials used here are API keys and accounts the
generated requests cannot reach (a key is revoked only by its random id,
nobody can revoke themselves, and a security administrator cannot touch the
system administrator).
"""

import pytest
import schemathesis
from api_env import ApiEnv
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from phasekit.testing.broker import LocalBroker
from phaseserver.auth.manage import Actor

CLI = Actor("cli:test", None, None, None, "cli")
EXAMPLES = 20  # per operation and mode


@pytest.fixture(scope="module")
def fuzz_env(tmp_path_factory):
    broker = LocalBroker(tmp_path_factory.mktemp("fuzz-broker"))
    broker.start()
    e = ApiEnv(tmp_path_factory.mktemp("api-fuzz"), broker=broker)
    assert e.api.commands.publish.wait_connected(10)
    m = e.manager()
    keys = {
        "installer": m.add_key(CLI, "t1", "installer", "fuzz-installer")[0],
        "secadmin": m.add_key(CLI, "t1", "secadmin", "fuzz-secadmin")[0],
    }
    e.fuzz_keys = keys
    yield e
    e.api.commands.close()
    e.close()
    broker.stop()


@pytest.fixture(scope="module")
def credentials(fuzz_env):
    e = fuzz_env
    with e.client() as c:
        root = e.bearer(c, "root")
    by_permission = {
        "fleet.read": e.key("viewer1"),
        "alarm.read": e.key("viewer1"),
        "alarm.ack": e.key("operator1"),
        "alarm.clear": e.key("operator1"),
        "command.read": e.key("operator1"),
        "command.send": e.key("operator1"),
        "registry.write": {"Authorization": "Bearer " + e.fuzz_keys["installer"]},
        "user.manage": {"Authorization": "Bearer " + e.fuzz_keys["secadmin"]},
        "key.manage": {"Authorization": "Bearer " + e.fuzz_keys["secadmin"]},
        "audit.read": e.key("auditor1"),
        "tenant.manage": root,
        "metrics.read": e.key("monitor"),
        "self": e.key("viewer1"),
        "public": {},
    }
    return by_permission


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_the_api_conforms_to_its_openapi_document(fuzz_env, credentials, mode):
    # schemathesis' own pytest plugin does not run under pytest 9 (it reads a private attribute of
    # pytest's nodes), so each operation's strategy is driven by Hypothesis here, with the same checks.
    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzz_env.app)
    tested = 0
    for result in schema.get_all_operations():
        op = result.ok()
        raw = op.definition.raw
        headers = dict(credentials[raw["x-permission"]])
        if mode == GenerationMode.NEGATIVE and not (raw.get("parameters") or raw.get("requestBody")):
            tested += 1  # no input to get wrong
            continue

        @given(case=op.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        def run(case):
            case.call_and_validate(headers=run.headers)

        run.headers = headers  # bound per operation (a closure would see the loop's last value)
        run()
        tested += 1
    assert tested == len(fuzz_env.api.endpoints) - 1  # all but /openapi.json itself (checked below)


def test_the_document_is_openapi_3_1_and_covers_every_route(fuzz_env):
    with fuzz_env.client() as c:
        doc = c.get("/openapi.json").json()
    assert doc["openapi"] == "3.1.0"
    ops = {(m.upper(), p) for p, item in doc["paths"].items() for m in item}
    assert ops == {(ep.method, ep.path) for ep in fuzz_env.api.endpoints}
    for path, item in doc["paths"].items():
        for method, op in item.items():
            assert op["operationId"] and op["responses"], (method, path)
            if op["x-permission"] != "public":
                assert {"401", "403"} <= set(op["responses"]) and op["security"], (method, path)
    schemathesis.openapi.from_dict(doc)  # schemathesis itself accepts it
