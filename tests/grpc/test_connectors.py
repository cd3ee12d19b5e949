"""Connector CRUD through Dex's gRPC API (DEX_API_CONNECTORS_CRUD=true), driven by grpcio
stubs generated from proto/api.proto: connectors created through the API are served at once,
changes take effect without a restart, and configs are checked as the config file's are."""

import base64
import json

import grpc
import pytest
import requests

from conftest import auth_params, browser_login

REDIRECT = "http://127.0.0.1:9/callback"


def unknown_error(call) -> str:
    with pytest.raises(grpc.RpcError) as e:
        call()
    assert e.value.code() == grpc.StatusCode.UNKNOWN, e.value
    return e.value.details()


def mock_password(pb2, password, name="API Mock", id="api-mock"):
    config = json.dumps({"username": "kilgore", "password": password}).encode()
    return pb2.Connector(id=id, type="mockPassword", name=name, config=config)


def chooser(server, client_id) -> str:
    """The connector chooser page /auth shows the client."""
    resp = requests.get(f"{server.issuer}/auth", params=auth_params(client_id, REDIRECT))
    assert resp.status_code == 200, resp.text[:300]
    return resp.text


def subject_connector(id_token: str) -> bytes:
    payload = id_token.split(".")[1]
    sub = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["sub"]
    return base64.urlsafe_b64decode(sub + "=" * (-len(sub) % 4))


def test_connector_created_through_the_api_signs_in_changes_and_goes_without_a_restart(
    connectors_crud, api
):
    server, stub = connectors_crud
    pb2, _ = api
    secret = stub.CreateClient(
        pb2.CreateClientReq(client=pb2.Client(id="app", redirect_uris=[REDIRECT]))
    ).client.secret

    created = stub.CreateConnector(pb2.CreateConnectorReq(connector=mock_password(pb2, "first-pass-123")))
    assert not created.already_exists
    again = stub.CreateConnector(pb2.CreateConnectorReq(connector=mock_password(pb2, "x")))
    assert again.already_exists

    listed = {c.id: c for c in stub.ListConnectors(pb2.ListConnectorReq()).connectors}
    assert listed["api-mock"].type == "mockPassword" and listed["api-mock"].name == "API Mock"
    assert json.loads(listed["api-mock"].config) == {"username": "kilgore", "password": "first-pass-123"}
    # Stored sealed: the password is not in the database.
    rows = server.query("SELECT id, connector_type, resource_version, config FROM connectors")
    assert [r[:3] for r in rows] == [("api-mock", "mockPassword", "1")]
    assert "first-pass-123" not in rows[0][3] and rows[0][3].startswith("kek1.")

    # Served at once: offered on /auth and signs in.
    assert "/auth/api-mock?" in chooser(server, "app")
    code = browser_login(server.issuer, "app", REDIRECT, "kilgore", "first-pass-123", "api-mock")
    assert isinstance(code, str), code.text[:300]
    tokens = requests.post(
        f"{server.issuer}/token",
        data={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT},
        auth=("app", secret),
    )
    assert tokens.status_code == 200, tokens.text
    assert b"api-mock" in subject_connector(tokens.json()["id_token"])

    # A new config takes effect on the next login: the old password stops working.
    upd = stub.UpdateConnector(
        pb2.UpdateConnectorReq(
            id="api-mock",
            new_config=json.dumps({"username": "kilgore", "password": "second-pass-456"}).encode(),
        )
    )
    assert not upd.not_found
    old = browser_login(server.issuer, "app", REDIRECT, "kilgore", "first-pass-123", "api-mock")
    assert not isinstance(old, str), "the old password still signs in"
    new = browser_login(server.issuer, "app", REDIRECT, "kilgore", "second-pass-456", "api-mock")
    assert isinstance(new, str), new.text[:300]
    assert not stub.UpdateConnector(pb2.UpdateConnectorReq(id="api-mock", new_name="Renamed")).not_found
    assert "Sign in with Renamed" in chooser(server, "app")
    assert server.query("SELECT resource_version FROM connectors") == [("3",)]
    assert stub.UpdateConnector(pb2.UpdateConnectorReq(id="nobody", new_name="x")).not_found

    # Deleted: no longer offered, and naming it is refused.
    assert not stub.DeleteConnector(pb2.DeleteConnectorReq(id="api-mock")).not_found
    assert stub.DeleteConnector(pb2.DeleteConnectorReq(id="api-mock")).not_found
    page = chooser(server, "app")
    assert "/auth/api-mock?" not in page and "/auth/static-mock?" in page
    resp = requests.get(
        f"{server.issuer}/auth", params=auth_params("app", REDIRECT, "api-mock"), allow_redirects=False
    )
    assert resp.status_code in (302, 303) and "error=invalid_request" in resp.headers["location"]
    assert "api-mock" not in [c.id for c in stub.ListConnectors(pb2.ListConnectorReq()).connectors]

    # Audited, without the config.
    server.wait_for_log("lanyard::audit", "connector.create", "api-mock", "mockPassword")
    server.wait_for_log("lanyard::audit", "connector.update", "api-mock")
    log = server.wait_for_log("lanyard::audit", "connector.delete", "api-mock")
    assert "first-pass-123" not in log and "second-pass-456" not in log


def test_a_bad_connector_is_refused_with_dexs_errors_and_nothing_is_stored(connectors_crud, api):
    server, stub = connectors_crud
    pb2, _ = api

    def create(**fields):
        return lambda: stub.CreateConnector(pb2.CreateConnectorReq(connector=pb2.Connector(**fields)))

    ldap = {"host": "ldap.example.com:636", "userSearch": {"baseDN": "ou=people,dc=example,dc=org", "username": "uid"}}
    good = {"id": "corp", "type": "ldap", "name": "Corp", "config": json.dumps(ldap).encode()}
    assert unknown_error(create(**{**good, "id": ""})) == "no id supplied"
    assert unknown_error(create(**{**good, "type": ""})) == "no type supplied"
    assert unknown_error(create(**{**good, "name": ""})) == "no name supplied"
    assert unknown_error(create(**{**good, "config": b""})) == "no config supplied"
    assert unknown_error(create(**{**good, "config": b"{not json"})) == "invalid config supplied"
    # Checked as the config file's connectors are, each problem under its key.
    missing_host = unknown_error(create(**{**good, "config": b"{}"}))
    assert missing_host.startswith("invalid config supplied: ") and "config.host" in missing_host
    typo = unknown_error(create(**{**good, "config": json.dumps({**ldap, "hots": "x"}).encode()}))
    assert "config.hots" in typo and "host" in typo, typo
    unsupported = unknown_error(create(**{**good, "type": "nonsense"}))
    assert "nonsense" in unsupported and "not supported" in unsupported
    assert server.query("SELECT id FROM connectors") == []

    # An update is checked the same way and leaves the connector as it was.
    stub.CreateConnector(pb2.CreateConnectorReq(connector=pb2.Connector(**good)))
    bad = unknown_error(lambda: stub.UpdateConnector(pb2.UpdateConnectorReq(id="corp", new_config=b"{}")))
    assert "config.host" in bad
    assert unknown_error(lambda: stub.UpdateConnector(pb2.UpdateConnectorReq(id="corp", new_config=b"[1"))) == (
        "invalid config supplied"
    )
    # The stored config is checked against a new type too.
    assert "invalid config supplied" in unknown_error(
        lambda: stub.UpdateConnector(pb2.UpdateConnectorReq(id="corp", new_type="oidc"))
    )
    assert unknown_error(lambda: stub.UpdateConnector(pb2.UpdateConnectorReq(id="corp"))) == "nothing to update"
    assert server.query("SELECT connector_type, resource_version FROM connectors") == [("ldap", "1")]


def test_the_config_files_connectors_are_listed_and_read_only(connectors_crud, api):
    _, stub = connectors_crud
    pb2, _ = api
    listed = {c.id: c for c in stub.ListConnectors(pb2.ListConnectorReq()).connectors}
    assert listed["static-mock"].type == "mockCallback" and listed["static-mock"].name == "Static Mock"
    assert listed["local"].type == "local", "the password database is listed, as in Dex"
    for id in ["static-mock", "local"]:
        assert unknown_error(
            lambda: stub.CreateConnector(pb2.CreateConnectorReq(connector=mock_password(pb2, "p", id=id)))
        ) == "create connector: static connectors: read-only cannot create connector"
        assert unknown_error(
            lambda: stub.UpdateConnector(pb2.UpdateConnectorReq(id=id, new_name="x"))
        ) == "update connector: static connectors: read-only cannot update connector"
        assert unknown_error(
            lambda: stub.DeleteConnector(pb2.DeleteConnectorReq(id=id))
        ) == "delete connector: static connectors: read-only cannot delete connector"
