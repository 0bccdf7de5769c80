"""API keys and roles: parsing CITYAGENT_API_KEYS and the keys file, scopes, 401 vs 403."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
import pytest
from fastapi import FastAPI
from starlette.exceptions import StarletteDeprecationWarning

from api.auth import (
    AdminDep,
    IntegratorDep,
    KeyRing,
    OperatorDep,
    Principal,
    load_keys_file,
    parse_api_keys,
)
from cityagent.errors import ConfigError
from cityagent.regions import default_regions
from cityagent.settings import Settings

with warnings.catch_warnings():  # starlette asks for httpx2, which is not in our dependencies
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

CITIES = {c.code for c in default_regions().cities}


def test_the_issue_example_parses_into_roles_and_scopes() -> None:
    keys = parse_api_keys("admin:k1,operator:k2:370100|370200,integrator:k3:jn-", CITIES)
    assert [k.role for k in keys] == ["admin", "operator", "integrator"]
    assert keys[1].cities == {"370100", "370200"} and keys[1].prefixes == ()
    assert keys[2].cities == frozenset() and keys[2].prefixes == ("jn-",)
    assert keys[0].digest == hashlib.sha256(b"k1").digest()  # only the digest is kept
    assert all(k.key_id.startswith("k") and len(k.key_id) == 9 for k in keys)


def test_hashed_keys_and_trailing_commas() -> None:
    digest = hashlib.sha256(b"s3cret").hexdigest()
    ring = KeyRing(parse_api_keys(f"integrator:sha256:{digest}:jn-|370100, ,"))
    principal = ring.authenticate("s3cret")
    assert principal == Principal("integrator", "k" + digest[:8], frozenset({"370100"}), ("jn-",))
    assert ring.authenticate("S3CRET") is None and ring.authenticate("") is None


@pytest.mark.parametrize("text, words", [
    ("admin:k1,boss:k2", "entry 2: role must be one of integrator, viewer, operator, admin; got 'boss'"),
    ("admin:", "entry 1: the key is empty"),
    ("admin:k1,operator:k2:370100:x", "entry 2: too many ':'"),
    ("operator:k2:370102", "370102 is not a city code"),
    ("operator:k2:990100", "unknown city code 990100"),
    ("operator:k2:jn-|bad prefix", "'bad prefix' is neither a city code nor a sensor-id prefix"),
    ("admin:k1:370100", "an admin key takes no scope"),
    ("admin:sha256:abc", "a sha256 digest is 64 hex digits"),
    ("admin:k1,operator:k1", "configured twice"),
])
def test_bad_entries_name_the_entry_and_never_echo_the_key(text: str, words: str) -> None:
    with pytest.raises(ConfigError, match="CITYAGENT_API_KEYS|configured twice") as caught:
        KeyRing(parse_api_keys(text, CITIES))
    message = str(caught.value)
    assert words in message
    assert ":k1" not in message and ":k2" not in message and "'k2'" not in message


def test_no_keys_at_all_is_a_config_error_pointing_at_cityagent_up() -> None:
    with pytest.raises(ConfigError, match="no API keys are configured.*cityagent up"):
        KeyRing.from_settings(Settings())


def test_keys_file_in_toml(tmp_path: Path) -> None:
    path = tmp_path / "keys.toml"
    digest = hashlib.sha256(b"ops-key").hexdigest()
    path.write_text(f'''
[[keys]]
role = "integrator"
key = "water-bureau-key"
scope = ["jn-", "370100"]
name = "jinan-water"

[[keys]]
role = "operator"
sha256 = "{digest}"
scope = "370200|370100"
''')
    settings = Settings.from_env({"CITYAGENT_API_KEYS_FILE": str(path),
                                  "CITYAGENT_API_KEYS": "admin:root-key"})
    ring = KeyRing.from_settings(settings, CITIES)
    assert len(ring) == 3
    water = ring.authenticate("water-bureau-key")
    assert water is not None and water.key_id == "jinan-water" and water.scopes == ("370100", "jn-")
    ops = ring.authenticate("ops-key")
    assert ops is not None and ops.role == "operator" and ops.cities == {"370100", "370200"}
    assert ring.authenticate("root-key").role == "admin"  # type: ignore[union-attr]


@pytest.mark.parametrize("body, words", [
    ('[[keys]]\nrole = "admin"\n', "give exactly one of 'key'"),
    ('[[keys]]\nrole = "admin"\nkey = "a"\nsha256 = "b"\n', "give exactly one of 'key'"),
    ('[[keys]]\nrole = "admin"\nkey = "a"\ncolour = "red"\n', "unknown field 'colour'"),
    ('[[keys]]\nrole = "admin"\nkey = "a"\n[[keys]]\nrole = "x"\nkey = "b"\n',
     "[[keys]] number 2: role must be one of"),
    ("key = 'a'\n", "expected only [[keys]] tables"),
    ("[[keys]\n", "cannot read it as TOML"),
])
def test_bad_keys_files_name_the_file_and_table(tmp_path: Path, body: str, words: str) -> None:
    path = tmp_path / "keys.toml"
    path.write_text(body)
    with pytest.raises(ConfigError) as caught:
        load_keys_file(path, CITIES)
    assert str(path) in str(caught.value) and words in str(caught.value)


def test_settings_never_print_the_keys() -> None:
    settings = Settings.from_env({"CITYAGENT_API_KEYS": "admin:very-secret"})
    assert settings.api_keys == "admin:very-secret" and "very-secret" not in repr(settings)


@pytest.mark.parametrize("env, words", [
    ({"CITYAGENT_API_RATE": "0"}, "CITYAGENT_API_RATE must be a positive number"),
    ({"CITYAGENT_API_BURST": "many"}, "CITYAGENT_API_BURST must be a whole number"),
    ({"CITYAGENT_API_KEYS_FILE": "/no/such/keys.toml"}, "CITYAGENT_API_KEYS_FILE names no readable"),
])
def test_bad_api_settings_name_the_variable(env: dict[str, str], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        Settings.from_env(env)


def test_principal_scopes() -> None:
    unscoped = Principal("operator", "k1")
    assert unscoped.may_see_city("370100") and unscoped.may_see("370200", "qd-1")
    scoped = Principal("operator", "k2", frozenset({"370100"}), ("wh-",))
    assert scoped.may_see_city("370100") and not scoped.may_see_city("370200")
    assert scoped.may_see("370200", "wh-7") and not scoped.may_see("370200", "qd-1")
    mask = scoped.scope_mask(np.array(["jn-1", "wh-2", "qd-3"]), np.array(["370100", "371000", "370200"]))
    assert mask.tolist() == [True, True, False]
    assert "scoped to 370100|wh-" in scoped.describe()


def _app(keys: str) -> TestClient:
    app = FastAPI()
    app.state.keys = KeyRing(parse_api_keys(keys))

    @app.post("/ingest")
    async def ingest(principal: IntegratorDep) -> dict[str, str]:
        return {"role": principal.role}

    @app.get("/read")
    async def read(principal: OperatorDep) -> dict[str, str]:
        return {"role": principal.role}

    @app.put("/admin")
    async def admin(principal: AdminDep) -> dict[str, str]:
        return {"role": principal.role}

    @app.get("/open")
    async def open_route() -> dict[str, str]:
        return {"ok": "yes"}

    return TestClient(app)


def test_401_for_missing_or_unknown_keys_403_for_the_wrong_role() -> None:
    client = _app("admin:a-key,operator:o-key:370100,integrator:i-key")
    missing = client.post("/ingest")
    assert missing.status_code == 401
    assert missing.json() == {"detail": "missing API key: send Authorization: Bearer KEY"}
    assert missing.headers["www-authenticate"] == "Bearer"
    basic = client.post("/ingest", headers={"authorization": "Basic dXNlcjpwdw=="})
    assert basic.status_code == 401 and "must be 'Bearer KEY'" in basic.json()["detail"]
    empty = client.post("/ingest", headers={"authorization": "Bearer   "})
    assert empty.status_code == 401 and "says Bearer but holds no key" in empty.json()["detail"]
    wrong = client.post("/ingest", headers={"authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["detail"].startswith("invalid API key")

    def call(method: str, path: str, key: str) -> tuple[int, str]:
        r = client.request(method, path, headers={"authorization": f"Bearer {key}"})
        return r.status_code, r.text

    assert call("POST", "/ingest", "i-key")[0] == 200
    assert call("POST", "/ingest", "a-key")[0] == 200  # admin does what integrators do
    status, text = call("POST", "/ingest", "o-key")
    assert status == 403
    assert "operator key" in text and "scoped to 370100" in text
    assert "POST /ingest needs an integrator or admin key" in text
    assert call("GET", "/read", "o-key")[0] == 200 and call("GET", "/read", "a-key")[0] == 200
    assert call("GET", "/read", "i-key")[0] == 403
    assert call("PUT", "/admin", "a-key")[0] == 200
    status, text = call("PUT", "/admin", "o-key")
    assert status == 403 and "needs an admin key" in text
    assert client.get("/open").status_code == 200


def test_the_openapi_document_declares_the_bearer_scheme() -> None:
    doc = _app("admin:a").get("/openapi.json").json()
    assert doc["components"]["securitySchemes"]["APIKey"]["scheme"] == "bearer"
