"""Dex's gRPC API on lanyard, driven by grpcio stubs generated from proto/api.proto."""

import base64
import hashlib
import json
import subprocess

import bcrypt
import grpc
import pytest
import requests

from conftest import BIN, STATIC_PASSWORD, Lanyard, browser_login

REDIRECT = "http://127.0.0.1:9/callback"


def hashed(password: str, cost: int = 10) -> bytes:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(cost))


def unknown_error(call) -> str:
    with pytest.raises(grpc.RpcError) as e:
        call()
    assert e.value.code() == grpc.StatusCode.UNKNOWN, e.value
    return e.value.details()


def claims(jwt: str) -> dict:
    payload = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def redeem(issuer, client_id, secret, code):
    return requests.post(
        f"{issuer}/token",
        data={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT},
        auth=(client_id, secret),
    )


def refresh(issuer, client_id, secret, token):
    return requests.post(
        f"{issuer}/token",
        data={"grant_type": "refresh_token", "refresh_token": token},
        auth=(client_id, secret),
    )


def test_get_version_reports_dex_api_version_3(plaintext, api):
    _, stub = plaintext
    pb2, _ = api
    version = stub.GetVersion(pb2.VersionReq())
    assert version.api == 3
    assert version.server.startswith("v2.45.1+lanyard.")


def test_get_discovery_matches_the_discovery_document(plaintext, api):
    server, stub = plaintext
    pb2, _ = api
    disc = stub.GetDiscovery(pb2.DiscoveryReq())
    doc = requests.get(f"{server.issuer}/.well-known/openid-configuration").json()
    assert disc.issuer == doc["issuer"] == server.issuer
    assert disc.token_endpoint == doc["token_endpoint"]
    assert disc.jwks_uri == doc["jwks_uri"]
    assert list(disc.scopes_supported) == doc["scopes_supported"]
    assert list(disc.grant_types_supported) == doc["grant_types_supported"]


def test_created_client_signs_in_through_the_browser_flow_and_its_secret_is_stored_hashed(
    plaintext, api
):
    server, stub = plaintext
    pb2, _ = api
    resp = stub.CreateClient(
        pb2.CreateClientReq(
            client=pb2.Client(id="portal", name="Portal", redirect_uris=[REDIRECT])
        )
    )
    assert not resp.already_exists
    secret = resp.client.secret
    assert len(secret) >= 32, "a secret is drawn for a confidential client"
    # Only the hash is stored, and the secret is never shown again.
    row = server.query("SELECT secret_sha256 FROM clients WHERE id = 'portal'")[0]
    assert row[0] == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in repr(server.query("SELECT * FROM clients"))
    got = stub.GetClient(pb2.GetClientReq(id="portal")).client
    assert got.secret == "" and got.name == "Portal" and list(got.redirect_uris) == [REDIRECT]
    assert "portal" in [c.id for c in stub.ListClients(pb2.ListClientReq()).clients]

    code = browser_login(server.issuer, "portal", REDIRECT, "static@example.com", STATIC_PASSWORD)
    tokens = redeem(server.issuer, "portal", secret, code)
    assert tokens.status_code == 200, tokens.text
    assert claims(tokens.json()["id_token"])["aud"] == "portal"

    again = stub.CreateClient(pb2.CreateClientReq(client=pb2.Client(id="portal", name="x")))
    assert again.already_exists


def test_deleted_client_is_refused_at_auth(plaintext, api):
    server, stub = plaintext
    pb2, _ = api
    stub.CreateClient(pb2.CreateClientReq(client=pb2.Client(id="gone", redirect_uris=[REDIRECT])))
    assert not stub.DeleteClient(pb2.DeleteClientReq(id="gone")).not_found
    assert stub.DeleteClient(pb2.DeleteClientReq(id="gone")).not_found
    resp = browser_login(server.issuer, "gone", REDIRECT, "static@example.com", STATIC_PASSWORD)
    assert not isinstance(resp, str) and resp.status_code == 400, resp
    assert unknown_error(lambda: stub.GetClient(pb2.GetClientReq(id="gone"))) == "not found"


def test_update_client_changes_given_fields_and_reports_not_found(plaintext, api):
    _, stub = plaintext
    pb2, _ = api
    stub.CreateClient(pb2.CreateClientReq(client=pb2.Client(id="upd", name="Old", redirect_uris=[REDIRECT])))
    resp = stub.UpdateClient(pb2.UpdateClientReq(id="upd", name="New", logo_url="https://logo.example/x.png"))
    assert not resp.not_found
    got = stub.GetClient(pb2.GetClientReq(id="upd")).client
    assert got.name == "New" and got.logo_url == "https://logo.example/x.png"
    assert list(got.redirect_uris) == [REDIRECT], "an empty list leaves the URIs as they were"
    assert stub.UpdateClient(pb2.UpdateClientReq(id="nobody", name="x")).not_found
    assert "no client ID" in unknown_error(lambda: stub.UpdateClient(pb2.UpdateClientReq()))


def test_static_client_is_listed_and_read_only(plaintext, api):
    _, stub = plaintext
    pb2, _ = api
    listed = {c.id: c for c in stub.ListClients(pb2.ListClientReq()).clients}
    assert listed["static-app"].name == "Static App"
    assert stub.GetClient(pb2.GetClientReq(id="static-app")).client.secret == ""
    for call in [
        lambda: stub.UpdateClient(pb2.UpdateClientReq(id="static-app", name="x")),
        lambda: stub.DeleteClient(pb2.DeleteClientReq(id="static-app")),
        lambda: stub.CreateClient(pb2.CreateClientReq(client=pb2.Client(id="static-app"))),
    ]:
        assert "staticClients" in unknown_error(call)


def test_created_password_logs_in_verifies_and_is_deleted(plaintext, api):
    server, stub = plaintext
    pb2, _ = api
    created = stub.CreateClient(pb2.CreateClientReq(client=pb2.Client(id="pw-app", redirect_uris=[REDIRECT])))
    secret = created.client.secret
    resp = stub.CreatePassword(
        pb2.CreatePasswordReq(
            password=pb2.Password(
                email="jane@example.com", hash=hashed("correct horse"), username="jane", user_id="jane-1"
            )
        )
    )
    assert not resp.already_exists
    again = stub.CreatePassword(
        pb2.CreatePasswordReq(
            password=pb2.Password(email="jane@example.com", hash=hashed("x" * 9), username="jane2", user_id="j")
        )
    )
    assert again.already_exists
    listed = {p.email: p for p in stub.ListPasswords(pb2.ListPasswordReq()).passwords}
    assert listed["jane@example.com"].username == "jane"
    assert listed["jane@example.com"].hash == b"", "hashes are never listed"
    assert "static@example.com" in listed

    code = browser_login(server.issuer, "pw-app", REDIRECT, "jane@example.com", "correct horse")
    tokens = redeem(server.issuer, "pw-app", secret, code)
    assert tokens.status_code == 200, tokens.text
    assert claims(tokens.json()["id_token"])["email"] == "jane@example.com"

    ok = stub.VerifyPassword(pb2.VerifyPasswordReq(email="jane@example.com", password="correct horse"))
    assert ok.verified and not ok.not_found
    bad = stub.VerifyPassword(pb2.VerifyPasswordReq(email="jane@example.com", password="wrong"))
    assert not bad.verified and not bad.not_found
    missing = stub.VerifyPassword(pb2.VerifyPasswordReq(email="nobody@example.com", password="x"))
    assert missing.not_found

    upd = stub.UpdatePassword(
        pb2.UpdatePasswordReq(email="jane@example.com", new_hash=hashed("battery staple"), new_username="janet")
    )
    assert not upd.not_found
    assert stub.VerifyPassword(pb2.VerifyPasswordReq(email="jane@example.com", password="battery staple")).verified
    assert stub.UpdatePassword(pb2.UpdatePasswordReq(email="no@example.com", new_username="x")).not_found
    assert "nothing to update" in unknown_error(
        lambda: stub.UpdatePassword(pb2.UpdatePasswordReq(email="jane@example.com"))
    )

    assert not stub.DeletePassword(pb2.DeletePasswordReq(email="jane@example.com")).not_found
    assert stub.DeletePassword(pb2.DeletePasswordReq(email="jane@example.com")).not_found
    assert stub.VerifyPassword(pb2.VerifyPasswordReq(email="jane@example.com", password="battery staple")).not_found


def test_create_password_refuses_what_dex_refuses(plaintext, api):
    _, stub = plaintext
    pb2, _ = api
    low_cost = hashed("some password", cost=4)
    assert "cost" in unknown_error(
        lambda: stub.CreatePassword(
            pb2.CreatePasswordReq(password=pb2.Password(email="a@example.com", hash=low_cost, user_id="a"))
        )
    )
    assert "no user ID" in unknown_error(
        lambda: stub.CreatePassword(
            pb2.CreatePasswordReq(password=pb2.Password(email="a@example.com", hash=hashed("x" * 9)))
        )
    )
    assert "bcrypt" in unknown_error(
        lambda: stub.CreatePassword(
            pb2.CreatePasswordReq(password=pb2.Password(email="a@example.com", hash=b"plain text", user_id="a"))
        )
    )


def test_static_password_is_read_only(plaintext, api):
    _, stub = plaintext
    pb2, _ = api
    for call in [
        lambda: stub.UpdatePassword(pb2.UpdatePasswordReq(email="static@example.com", new_username="x")),
        lambda: stub.DeletePassword(pb2.DeletePasswordReq(email="static@example.com")),
        lambda: stub.CreatePassword(
            pb2.CreatePasswordReq(
                password=pb2.Password(email="static@example.com", hash=hashed("x" * 9), user_id="s")
            )
        ),
    ]:
        assert "staticPasswords" in unknown_error(call)
    assert stub.VerifyPassword(pb2.VerifyPasswordReq(email="static@example.com", password=STATIC_PASSWORD)).verified


def test_verify_password_is_rate_limited_like_the_login_form(plaintext, api):
    _, stub = plaintext
    pb2, _ = api
    stub.CreatePassword(
        pb2.CreatePasswordReq(
            password=pb2.Password(email="target@example.com", hash=hashed("the right one"), user_id="t-1")
        )
    )
    for _ in range(5):
        resp = stub.VerifyPassword(pb2.VerifyPasswordReq(email="target@example.com", password="guess"))
        assert not resp.verified
    with pytest.raises(grpc.RpcError) as e:
        stub.VerifyPassword(pb2.VerifyPasswordReq(email="target@example.com", password="the right one"))
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_list_and_revoke_refresh_then_the_refresh_token_fails(plaintext, api):
    server, stub = plaintext
    pb2, _ = api
    secret = stub.CreateClient(
        pb2.CreateClientReq(client=pb2.Client(id="rt-app", redirect_uris=[REDIRECT]))
    ).client.secret
    code = browser_login(server.issuer, "rt-app", REDIRECT, "static@example.com", STATIC_PASSWORD)
    tokens = redeem(server.issuer, "rt-app", secret, code).json()
    sub = claims(tokens["id_token"])["sub"]

    refs = stub.ListRefresh(pb2.ListRefreshReq(user_id=sub)).refresh_tokens
    assert [r.client_id for r in refs] == ["rt-app"]
    assert refs[0].created_at > 0 and refs[0].last_used >= refs[0].created_at

    assert not stub.RevokeRefresh(pb2.RevokeRefreshReq(user_id=sub, client_id="rt-app")).not_found
    assert stub.RevokeRefresh(pb2.RevokeRefreshReq(user_id=sub, client_id="rt-app")).not_found
    assert stub.ListRefresh(pb2.ListRefreshReq(user_id=sub)).refresh_tokens == []
    resp = refresh(server.issuer, "rt-app", secret, tokens["refresh_token"])
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_grant", resp.text


def test_list_refresh_lists_every_refresh_token_of_the_user(plaintext, api):
    server, stub = plaintext
    pb2, _ = api
    secrets = {}
    for client_id in ["laptop-app", "other-app"]:
        secrets[client_id] = stub.CreateClient(
            pb2.CreateClientReq(client=pb2.Client(id=client_id, redirect_uris=[REDIRECT]))
        ).client.secret
    # Two sign-ins to one client (two machines) and one to another: three refresh tokens.
    issued = []
    for client_id in ["laptop-app", "laptop-app", "other-app"]:
        code = browser_login(server.issuer, client_id, REDIRECT, "static@example.com", STATIC_PASSWORD)
        issued.append(redeem(server.issuer, client_id, secrets[client_id], code).json())
    sub = claims(issued[0]["id_token"])["sub"]

    refs = stub.ListRefresh(pb2.ListRefreshReq(user_id=sub)).refresh_tokens
    assert sorted(r.client_id for r in refs) == ["laptop-app", "laptop-app", "other-app"]
    assert len({r.id for r in refs}) == 3

    # Revoking a client's refresh tokens ends both sign-ins to it and leaves the other.
    assert not stub.RevokeRefresh(pb2.RevokeRefreshReq(user_id=sub, client_id="laptop-app")).not_found
    refs = stub.ListRefresh(pb2.ListRefreshReq(user_id=sub)).refresh_tokens
    assert [r.client_id for r in refs] == ["other-app"]
    for tokens in issued[:2]:
        resp = refresh(server.issuer, "laptop-app", secrets["laptop-app"], tokens["refresh_token"])
        assert resp.status_code == 400, resp.text
    assert refresh(server.issuer, "other-app", secrets["other-app"], issued[2]["refresh_token"]).ok


def test_connector_crud_answers_as_dex_does_with_its_feature_flag_off(plaintext, api):
    _, stub = plaintext
    pb2, _ = api
    off = "api_connectors_crud feature flag is not enabled"
    assert unknown_error(lambda: stub.ListConnectors(pb2.ListConnectorReq())) == off
    assert unknown_error(
        lambda: stub.CreateConnector(
            pb2.CreateConnectorReq(connector=pb2.Connector(id="x", type="ldap", name="X", config=b"{}"))
        )
    ) == off
    assert unknown_error(lambda: stub.UpdateConnector(pb2.UpdateConnectorReq(id="x", new_name="y"))) == off
    assert unknown_error(lambda: stub.DeleteConnector(pb2.DeleteConnectorReq(id="x"))) == off


def test_changes_are_audited_with_the_caller_and_without_secrets(plaintext, api):
    server, stub = plaintext
    pb2, _ = api
    secret = stub.CreateClient(
        pb2.CreateClientReq(client=pb2.Client(id="audited", redirect_uris=[REDIRECT]))
    ).client.secret
    stub.DeleteClient(pb2.DeleteClientReq(id="audited"))
    server.wait_for_log("lanyard::audit", "client.create", "actor", "insecure", "audited")
    log = server.wait_for_log("lanyard::audit", "client.delete", "audited")
    assert secret not in log


def reflected_services(channel):
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    answers = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
    )
    return [s.name for a in answers for s in a.list_services_response.service]


def test_reflection_lists_the_dex_service_when_enabled(plaintext):
    server, _ = plaintext
    with grpc.insecure_channel(server.grpc_addr) as channel:
        assert "api.Dex" in reflected_services(channel)


def test_non_loopback_addr_without_client_certificates_is_refused_at_start(tmp_path):
    config = tmp_path / "config.yaml"
    from conftest import config_yaml

    config.write_text(config_yaml(5556, "grpc:\n  addr: 0.0.0.0:5557\n", tmp_path))
    out = subprocess.run([BIN, "check-config", "--config", str(config)], capture_output=True, text=True)
    assert out.returncode != 0
    assert "grpc.addr" in out.stdout + out.stderr and "tlsClientCA" in out.stdout + out.stderr

    config.write_text(
        config_yaml(5556, "grpc:\n  addr: 0.0.0.0:5557\n  allowInsecureRemote: true\n", tmp_path)
    )
    out = subprocess.run([BIN, "check-config", "--config", str(config)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_connectors_crud_flag_that_is_no_boolean_is_refused_at_start(tmp_path):
    config = tmp_path / "config.yaml"
    from conftest import config_yaml

    config.write_text(config_yaml(5556, "grpc:\n  addr: 127.0.0.1:5557\n", tmp_path))
    out = subprocess.run(
        [BIN, "check-config", "--config", str(config)],
        capture_output=True,
        text=True,
        env={"DEX_API_CONNECTORS_CRUD": "yes", "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode != 0
    assert "DEX_API_CONNECTORS_CRUD" in out.stdout + out.stderr


# --- mutual TLS -------------------------------------------------------------------------------


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate."""
    d = tmp_path_factory.mktemp("pki")
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=test CA", cwd=d)
    for name, subject, ext in [
        ("server", "/CN=localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth"),
        ("client", "/O=Platform/CN=automation", "extendedKeyUsage=clientAuth"),
        ("stranger", "/CN=stranger", "extendedKeyUsage=clientAuth"),
    ]:
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject, cwd=d)
        (d / f"{name}.ext").write_text(ext + "\n")
        if name == "stranger":
            # Signed by itself, not by the CA lanyard trusts.
            openssl("x509", "-req", "-in", f"{name}.csr", "-signkey", f"{name}.key",
                    "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=d)
        else:
            openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                    "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=d)
    return d


@pytest.fixture
def mtls(pki, backend):
    server = Lanyard(
        lambda addr: (
            f"grpc:\n  addr: {addr}\n  tlsCert: {pki}/server.pem\n  tlsKey: {pki}/server.key\n"
            f"  tlsClientCA: {pki}/ca.pem\n"
        ),
        backend=backend,
    )
    yield server
    server.stop()


def channel_for(server, pki, name=None):
    creds = grpc.ssl_channel_credentials(
        root_certificates=(pki / "ca.pem").read_bytes(),
        private_key=(pki / f"{name}.key").read_bytes() if name else None,
        certificate_chain=(pki / f"{name}.pem").read_bytes() if name else None,
    )
    return grpc.secure_channel(f"localhost:{server.grpc_port}", creds)


def test_mutual_tls_serves_a_trusted_client_and_audits_its_subject(mtls, pki, api):
    pb2, pb2_grpc = api
    with channel_for(mtls, pki, "client") as channel:
        stub = pb2_grpc.DexStub(channel)
        assert stub.GetVersion(pb2.VersionReq(), timeout=10).api == 3
        stub.CreateClient(pb2.CreateClientReq(client=pb2.Client(id="via-mtls", redirect_uris=[REDIRECT])))
    mtls.wait_for_log("lanyard::audit", "client.create", "CN=automation", "via-mtls")


def test_reflection_is_off_unless_enabled(mtls, pki):
    with channel_for(mtls, pki, "client") as channel:
        with pytest.raises(grpc.RpcError) as e:
            reflected_services(channel)
        assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED


@pytest.mark.parametrize("name", [None, "stranger"])
def test_mutual_tls_refuses_a_client_without_a_trusted_certificate(mtls, pki, api, name):
    pb2, pb2_grpc = api
    with channel_for(mtls, pki, name) as channel:
        stub = pb2_grpc.DexStub(channel)
        with pytest.raises(grpc.RpcError) as e:
            stub.GetVersion(pb2.VersionReq(), timeout=10)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_reload_that_changes_grpc_names_it_as_needing_a_restart(plaintext, api):
    import signal

    server, stub = plaintext
    pb2, _ = api
    text = server.config.read_text()
    server.config.write_text(text.replace("reflection: true", "reflection: false"))
    server.proc.send_signal(signal.SIGHUP)
    server.wait_for_log("need a restart", "grpc")
    # The running API is unchanged.
    assert stub.GetVersion(pb2.VersionReq()).api == 3
