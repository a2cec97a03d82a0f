"""The Herald sandbox against clients Herald did not write.

httpx (HTTP/2 via hyper-h2) + PyJWT + cryptography sign an APNs ES256 provider token and push;
google-auth reads the generated service-account file and fetches an access token exactly as the
Firebase Admin SDK does (token_uri, RS256 assertion); httpx then sends through FCM HTTP v1 and
legacy FCM. Accepted and fault-injected answers are checked, as is the control API.

Needs env HERALD_BIN: the path of a built `herald` binary. Run:
    python3 -m venv /tmp/venv-sandbox
    /tmp/venv-sandbox/bin/pip install -r tests/clients/sandbox/requirements.txt
    HERALD_BIN=$CARGO_TARGET_DIR/debug/herald /tmp/venv-sandbox/bin/pytest tests/clients/sandbox
"""

import base64
import json
import os
import signal
import socket
import ssl
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import jwt
import pytest

HERALD_BIN = os.environ.get("HERALD_BIN")

pytestmark = pytest.mark.skipif(
    not HERALD_BIN,
    reason="set HERALD_BIN to the path of a built `herald` binary to run the sandbox client tests",
)

BUNDLE_ID = "com.example.herald"
FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
ALERT = {"aps": {"alert": {"title": "Hi", "body": "Your order shipped"}}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sandbox:
    def __init__(self, base: str, creds: Path):
        self.base = base
        self.creds = creds
        self.ca = str(creds / "ca.pem")

    def ssl_context(self, client_cert: bool = False) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.ca)
        if client_cert:
            ctx.load_cert_chain(str(self.creds / "apns-cert.pem"), str(self.creds / "apns-key.pem"))
        return ctx

    def client(self, http2: bool = True, client_cert: bool = False) -> httpx.Client:
        return httpx.Client(
            http2=http2, http1=not http2, verify=self.ssl_context(client_cert), timeout=30
        )

    def control(self, method: str, path: str, body=None):
        with self.client(http2=False) as c:
            r = c.request(method, self.base + path, json=body)
            return r

    def apns_token_content(self) -> dict:
        return json.loads((self.creds / "apns-token.json").read_text())

    def provider_token(self, iat=None) -> str:
        content = self.apns_token_content()
        p8 = base64.b64decode(content["privateKey"])
        return jwt.encode(
            {"iss": content["teamId"], "iat": int(iat if iat is not None else time.time())},
            p8,
            algorithm="ES256",
            headers={"kid": content["keyId"]},
        )


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    creds = tmp_path_factory.mktemp("sandbox") / "credentials"
    port = free_port()
    proc = subprocess.Popen(
        [HERALD_BIN, "sandbox", "--listen", f"127.0.0.1:{port}", "--credentials", str(creds)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"https://127.0.0.1:{port}"
    sb = Sandbox(base, creds)
    deadline = time.monotonic() + 120
    try:
        while True:
            if proc.poll() is not None:
                out = proc.stdout.read()
                pytest.fail(f"herald sandbox exited with {proc.returncode}:\n{out}")
            if (creds / "herald.env").exists():
                try:
                    if sb.control("GET", "/_sandbox/info").status_code == 200:
                        break
                except (httpx.HTTPError, ssl.SSLError, OSError):
                    pass
            if time.monotonic() > deadline:
                pytest.fail("herald sandbox did not come up")
            time.sleep(0.1)
        yield sb
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, f"herald sandbox exit code {proc.returncode}"


@pytest.fixture(autouse=True)
def clean(sandbox):
    sandbox.control("DELETE", "/_sandbox/faults")
    yield


def device_token() -> str:
    return uuid.uuid4().hex + uuid.uuid4().hex


# --------------------------------------------------------------------------------------------
# Credential files


def test_credential_files(sandbox):
    env = dict(
        line.split("=", 1) for line in (sandbox.creds / "herald.env").read_text().splitlines()
    )
    assert env["HERALD_APNS_URL"] == sandbox.base
    assert env["HERALD_APNS_SANDBOX_URL"] == sandbox.base
    assert env["HERALD_FCM_URL"] == sandbox.base
    assert env["HERALD_FCM_LEGACY_URL"] == sandbox.base
    assert Path(env["HERALD_EXTRA_CA_FILE"]).is_absolute()
    assert Path(env["HERALD_EXTRA_CA_FILE"]).read_text() == (sandbox.creds / "ca.pem").read_text()

    content = sandbox.apns_token_content()
    assert set(content) == {"keyId", "teamId", "bundleId", "privateKey"}
    assert len(content["keyId"]) == 10 and len(content["teamId"]) == 10
    assert content["bundleId"] == BUNDLE_ID

    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    from cryptography.x509.oid import NameOID

    p8 = load_pem_private_key(base64.b64decode(content["privateKey"]), password=None)
    assert isinstance(p8, ec.EllipticCurvePrivateKey) and p8.curve.name == "secp256r1"

    cert = x509.load_pem_x509_certificate((sandbox.creds / "apns-cert.pem").read_bytes())
    uid = cert.subject.get_attributes_for_oid(NameOID.USER_ID)
    assert [a.value for a in uid] == [BUNDLE_ID]
    assert isinstance(cert.public_key(), rsa.RSAPublicKey)
    ca = x509.load_pem_x509_certificate((sandbox.creds / "ca.pem").read_bytes())
    cert.verify_directly_issued_by(ca)

    account = json.loads((sandbox.creds / "fcm-service-account.json").read_text())
    assert account["type"] == "service_account"
    assert account["token_uri"] == sandbox.base + "/token"
    key = load_pem_private_key(account["private_key"].encode(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    for name in ["ca-key.pem", "apns-key.pem", "apns-token.json", "fcm-service-account.json"]:
        assert (sandbox.creds / name).stat().st_mode & 0o777 == 0o600, name


# --------------------------------------------------------------------------------------------
# APNs


def apns_headers(token_jwt: str, **extra) -> dict:
    h = {"authorization": f"bearer {token_jwt}", "apns-topic": BUNDLE_ID, "apns-push-type": "alert"}
    h.update(extra)
    return h


def test_apns_token_auth_push(sandbox):
    token = device_token()
    provider_jwt = sandbox.provider_token()
    apns_id = str(uuid.uuid4()).upper()
    with sandbox.client() as c:
        r = c.post(
            f"{sandbox.base}/3/device/{token}",
            headers=apns_headers(provider_jwt, **{"apns-id": apns_id, "apns-priority": "10"}),
            json=ALERT,
        )
        assert r.http_version == "HTTP/2"
        assert r.status_code == 200, r.text
        assert r.content == b""
        assert r.headers["apns-id"] == apns_id

        # The same connection, a bad priority and an oversized payload.
        r = c.post(
            f"{sandbox.base}/3/device/{token}",
            headers=apns_headers(provider_jwt, **{"apns-priority": "3"}),
            json=ALERT,
        )
        assert (r.status_code, r.json()) == (400, {"reason": "BadPriority"})
        r = c.post(
            f"{sandbox.base}/3/device/{token}",
            headers=apns_headers(provider_jwt),
            json={"aps": {"alert": "x" * 5000}},
        )
        assert (r.status_code, r.json()) == (413, {"reason": "PayloadTooLarge"})

        # A token older than an hour.
        r = c.post(
            f"{sandbox.base}/3/device/{token}",
            headers=apns_headers(sandbox.provider_token(iat=time.time() - 3700)),
            json=ALERT,
        )
        assert (r.status_code, r.json()) == (403, {"reason": "ExpiredProviderToken"})

    # A JWT signed by a key that is not the sandbox's.
    from cryptography.hazmat.primitives.asymmetric import ec

    content = sandbox.apns_token_content()
    forged = jwt.encode(
        {"iss": content["teamId"], "iat": int(time.time())},
        ec.generate_private_key(ec.SECP256R1()),
        algorithm="ES256",
        headers={"kid": content["keyId"]},
    )
    with sandbox.client() as c:
        r = c.post(f"{sandbox.base}/3/device/{token}", headers=apns_headers(forged), json=ALERT)
        assert (r.status_code, r.json()) == (403, {"reason": "InvalidProviderToken"})

    received = sandbox.control("GET", f"/_sandbox/received?token={token}").json()
    assert [e["status"] for e in received] == [200, 400, 413, 403, 403]
    assert received[0]["provider"] == "apns"
    assert received[0]["payload"] == ALERT
    assert received[0]["headers"]["apns-topic"] == BUNDLE_ID


def test_apns_too_many_provider_token_updates(sandbox):
    token = device_token()
    with sandbox.client() as c:
        url = f"{sandbox.base}/3/device/{token}"
        first = sandbox.provider_token(iat=time.time() - 30)
        assert c.post(url, headers=apns_headers(first), json=ALERT).status_code == 200
        r = c.post(url, headers=apns_headers(sandbox.provider_token()), json=ALERT)
        assert (r.status_code, r.json()) == (429, {"reason": "TooManyProviderTokenUpdates"})


def test_apns_certificate_auth(sandbox):
    token = device_token()
    with sandbox.client(client_cert=True) as c:
        r = c.post(
            f"{sandbox.base}/3/device/{token}",
            headers={"apns-topic": BUNDLE_ID, "apns-push-type": "alert"},
            json=ALERT,
        )
        assert r.status_code == 200, r.text
        r = c.post(
            f"{sandbox.base}/3/device/{token}",
            headers={"apns-topic": "com.example.other"},
            json=ALERT,
        )
        assert (r.status_code, r.json()) == (400, {"reason": "TopicDisallowed"})
    # Without a certificate or a token.
    with sandbox.client() as c:
        r = c.post(f"{sandbox.base}/3/device/{token}", headers={"apns-topic": BUNDLE_ID}, json=ALERT)
        assert (r.status_code, r.json()) == (403, {"reason": "MissingProviderToken"})


def test_apns_faults(sandbox):
    dead = device_token()
    busy = device_token()
    flaky = device_token()
    r = sandbox.control("POST", "/_sandbox/faults", {"token": dead, "status": 410, "reason": "Unregistered"})
    assert r.status_code == 201, r.text
    sandbox.control(
        "POST",
        "/_sandbox/faults",
        {"token": busy, "status": 429, "reason": "TooManyRequests", "times": 1, "retryAfter": 12},
    )
    sandbox.control("POST", "/_sandbox/faults", {"token": flaky, "reset": True, "times": 1})
    provider_jwt = sandbox.provider_token()
    with sandbox.client() as c:
        r = c.post(f"{sandbox.base}/3/device/{dead}", headers=apns_headers(provider_jwt), json=ALERT)
        assert r.status_code == 410
        assert r.json()["reason"] == "Unregistered"
        assert isinstance(r.json()["timestamp"], int)

        r = c.post(f"{sandbox.base}/3/device/{busy}", headers=apns_headers(provider_jwt), json=ALERT)
        assert (r.status_code, r.headers["retry-after"]) == (429, "12")
        r = c.post(f"{sandbox.base}/3/device/{busy}", headers=apns_headers(provider_jwt), json=ALERT)
        assert r.status_code == 200

        with pytest.raises(httpx.HTTPError):
            c.post(f"{sandbox.base}/3/device/{flaky}", headers=apns_headers(provider_jwt), json=ALERT)
    with sandbox.client() as c:
        r = c.post(f"{sandbox.base}/3/device/{flaky}", headers=apns_headers(provider_jwt), json=ALERT)
        assert r.status_code == 200


# --------------------------------------------------------------------------------------------
# FCM HTTP v1 with google-auth fetching the access token


def google_access_token(sandbox) -> str:
    import google.auth.transport.requests
    import requests
    from google.oauth2 import service_account

    creds = service_account.Credentials.from_service_account_file(
        str(sandbox.creds / "fcm-service-account.json"), scopes=[FCM_SCOPE]
    )
    session = requests.Session()
    # requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override session.verify unless the
    # environment is ignored (which also keeps proxies out of loopback traffic).
    session.trust_env = False
    session.verify = sandbox.ca
    creds.refresh(google.auth.transport.requests.Request(session=session))
    assert creds.valid
    return creds.token


def test_fcm_google_auth_then_send(sandbox):
    access = google_access_token(sandbox)
    account = json.loads((sandbox.creds / "fcm-service-account.json").read_text())
    project = account["project_id"]
    token = device_token()
    message = {
        "message": {
            "token": token,
            "notification": {"title": "Hi", "body": "Your order shipped"},
            "data": {"orderId": "42"},
            "android": {"priority": "high", "ttl": "3600s"},
        }
    }
    with sandbox.client() as c:
        url = f"{sandbox.base}/v1/projects/{project}/messages:send"
        r = c.post(url, headers={"authorization": f"Bearer {access}"}, json=message)
        assert r.http_version == "HTTP/2"
        assert r.status_code == 200, r.text
        assert r.json()["name"].startswith(f"projects/{project}/messages/")

        bad = {"message": {"token": token, "data": {"orderId": 42}}}
        r = c.post(url, headers={"authorization": f"Bearer {access}"}, json=bad)
        assert r.status_code == 400
        assert r.json()["error"]["status"] == "INVALID_ARGUMENT"

        sandbox.control(
            "POST", "/_sandbox/faults", {"token": token, "status": 404, "reason": "UNREGISTERED", "times": 1}
        )
        r = c.post(url, headers={"authorization": f"Bearer {access}"}, json=message)
        assert r.status_code == 404
        err = r.json()["error"]
        assert err["status"] == "NOT_FOUND"
        assert {
            "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
            "errorCode": "UNREGISTERED",
        } in err["details"]

        # Revoked tokens get 401; a refresh gets a working one.
        assert sandbox.control("POST", "/_sandbox/fcm/revoke-access-tokens").status_code == 200
        r = c.post(url, headers={"authorization": f"Bearer {access}"}, json=message)
        assert (r.status_code, r.json()["error"]["status"]) == (401, "UNAUTHENTICATED")
        fresh = google_access_token(sandbox)
        r = c.post(url, headers={"authorization": f"Bearer {fresh}"}, json=message)
        assert r.status_code == 200


def test_fcm_pyjwt_assertion(sandbox):
    """The OAuth grant signed by hand with PyJWT, as a non-Google client would."""
    account = json.loads((sandbox.creds / "fcm-service-account.json").read_text())
    now = int(time.time())
    claims = {
        "iss": account["client_email"],
        "scope": FCM_SCOPE,
        "aud": account["token_uri"],
        "iat": now,
        "exp": now + 3600,
    }
    assertion = jwt.encode(
        claims, account["private_key"], algorithm="RS256", headers={"kid": account["private_key_id"]}
    )
    with sandbox.client(http2=False) as c:
        form = {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion}
        r = c.post(account["token_uri"], data=form)
        assert r.status_code == 200, r.text
        grant = r.json()
        assert grant["token_type"] == "Bearer" and grant["expires_in"] == 3599

        too_long = dict(claims, exp=now + 7200)
        form["assertion"] = jwt.encode(
            too_long, account["private_key"], algorithm="RS256", headers={"kid": account["private_key_id"]}
        )
        r = c.post(account["token_uri"], data=form)
        assert (r.status_code, r.json()["error"]) == (400, "invalid_grant")


# --------------------------------------------------------------------------------------------
# Legacy FCM and stats


def test_legacy_and_stats(sandbox):
    key = (sandbox.creds / "fcm-legacy-key.txt").read_text().strip()
    ok, gone = device_token(), device_token()
    sandbox.control("POST", "/_sandbox/faults", {"token": gone, "status": 410, "reason": "NotRegistered"})
    before = sandbox.control("GET", "/_sandbox/stats").json()
    with sandbox.client(http2=False) as c:
        r = c.post(
            f"{sandbox.base}/fcm/send",
            headers={"Authorization": f"key={key}"},
            json={"registration_ids": [ok, gone], "notification": {"title": "Hi"}, "priority": "high"},
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["success"], body["failure"], body["canonical_ids"]) == (1, 1, 0)
        assert "message_id" in body["results"][0]
        assert body["results"][1] == {"error": "NotRegistered"}

        r = c.post(f"{sandbox.base}/fcm/send", headers={"Authorization": "key=nope"}, json={"to": ok})
        assert r.status_code == 401
    after = sandbox.control("GET", "/_sandbox/stats").json()
    assert after["fcmLegacy"]["received"] - before["fcmLegacy"]["received"] == 3
    assert after["fcmLegacy"]["accepted"] - before["fcmLegacy"]["accepted"] == 1
    assert set(after) >= {"apns", "fcm", "fcmLegacy"}
