"""Herald's Chat Credential API (`/v2/Credentials`) driven by the official Twilio helper library.

The library is used unchanged: only its HTTP client is swapped for `HeraldHttpClient`, a
`TwilioHttpClient` subclass that sends what the library addresses to `https://chat.twilio.com`
to Herald instead (the library's own extension point; plain HTTP on loopback). Paging follows
the `next_page_url` / `previous_page_url` Herald returns, verbatim, as the library does.

Needs a running Herald and its account:
    HERALD_BASE_URL      e.g. http://127.0.0.1:8080
    HERALD_ACCOUNT_SID   e.g. the accountSid of DATA_DIR/bootstrap-account.json
    HERALD_AUTH_TOKEN    its authToken
Without them every test is skipped. Run:
    python3 -m venv /tmp/venv-twilio
    /tmp/venv-twilio/bin/pip install -r tests/clients/twilio/requirements.txt
    HERALD_BASE_URL=... HERALD_ACCOUNT_SID=... HERALD_AUTH_TOKEN=... \
        /tmp/venv-twilio/bin/pytest tests/clients/twilio

Every test deletes the credentials it made, so the suite can run against a shared account.
"""

import datetime
import os
from pathlib import Path

import pytest
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

BASE_URL = (os.environ.get("HERALD_BASE_URL") or "").rstrip("/")
ACCOUNT_SID = os.environ.get("HERALD_ACCOUNT_SID") or ""
AUTH_TOKEN = os.environ.get("HERALD_AUTH_TOKEN") or ""

pytestmark = pytest.mark.skipif(
    not (BASE_URL and ACCOUNT_SID and AUTH_TOKEN),
    reason="set HERALD_BASE_URL, HERALD_ACCOUNT_SID and HERALD_AUTH_TOKEN to run the Twilio "
    "helper-library tests against a running Herald",
)

TWILIO_CHAT = "https://chat.twilio.com"
TESTDATA = Path(__file__).resolve().parents[3] / "testdata" / "credentials"


def read_testdata(name: str) -> str:
    return (TESTDATA / name).read_text()


class HeraldHttpClient(TwilioHttpClient):
    """Sends the library's requests for chat.twilio.com to Herald, and remembers every request."""

    def __init__(self, base_url: str):
        super().__init__()
        self.base_url = base_url
        self.requests = []

    def request(self, method, url, params=None, data=None, headers=None, auth=None,
                timeout=None, allow_redirects=False):
        if url.startswith(TWILIO_CHAT):
            url = self.base_url + url[len(TWILIO_CHAT):]
        assert url.startswith(self.base_url), f"request left Herald: {url}"
        self.requests.append((method, url, dict(params or {}), dict(headers or {})))
        return super().request(method, url, params=params, data=data, headers=headers,
                               auth=auth, timeout=timeout, allow_redirects=allow_redirects)


@pytest.fixture
def http():
    return HeraldHttpClient(BASE_URL)


@pytest.fixture
def client(http):
    return Client(ACCOUNT_SID, AUTH_TOKEN, http_client=http)


@pytest.fixture
def made(client):
    """Sids of credentials a test made; deleted afterwards (already-deleted ones are fine)."""
    sids = []
    yield sids
    for sid in sids:
        try:
            client.chat.v2.credentials(sid).delete()
        except TwilioRestException as error:
            assert error.status == 404


def assert_api_time(value):
    # The library parses "%Y-%m-%dT%H:%M:%SZ" into an aware datetime, and leaves anything else
    # a plain string: a datetime here means Herald's format is the one the library expects.
    assert isinstance(value, datetime.datetime), repr(value)
    assert value.tzinfo == datetime.timezone.utc
    now = datetime.datetime.now(datetime.timezone.utc)
    assert abs((now - value).total_seconds()) < 24 * 3600


def test_apn_credential_lifecycle(client, http, made):
    created = client.chat.v2.credentials.create(
        type="apn",
        friendly_name="iOS production",
        certificate=read_testdata("apns-cert.pem"),
        private_key=read_testdata("apns-key.pem"),
        sandbox=True,
    )
    made.append(created.sid)
    method, url, _, headers = http.requests[-1]
    assert (method, url) == ("POST", f"{BASE_URL}/v2/Credentials")
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"

    assert created.sid.startswith("CR") and len(created.sid) == 34
    assert created.account_sid == ACCOUNT_SID
    assert created.friendly_name == "iOS production"
    assert created.type == "apn"
    assert created.sandbox == "True"
    assert_api_time(created.date_created)
    assert_api_time(created.date_updated)
    assert created.url == f"{BASE_URL}/v2/Credentials/{created.sid}"

    fetched = client.chat.v2.credentials(created.sid).fetch()
    assert (fetched.sid, fetched.friendly_name, fetched.type, fetched.sandbox) == (
        created.sid, "iOS production", "apn", "True")
    assert fetched.date_created == created.date_created

    updated = client.chat.v2.credentials(created.sid).update(
        friendly_name="renamed", sandbox=False)
    assert updated.friendly_name == "renamed"
    assert updated.sandbox == "False"
    assert updated.date_created == created.date_created
    assert updated.date_updated >= created.date_updated

    # Instance methods go through the same context.
    again = fetched.update(private_key=read_testdata("apns-key-pkcs1.pem"))
    assert again.friendly_name == "renamed"
    assert again.fetch().sandbox == "False"

    assert client.chat.v2.credentials(created.sid).delete() is True
    assert http.requests[-1][:2] == ("DELETE", f"{BASE_URL}/v2/Credentials/{created.sid}")
    with pytest.raises(TwilioRestException) as caught:
        client.chat.v2.credentials(created.sid).fetch()
    assert caught.value.status == 404
    assert caught.value.code == 20404


def test_gcm_and_fcm_credentials(client, made):
    gcm = client.chat.v2.credentials.create(type="gcm", api_key="AIzaSyHeraldHelperLibraryTest")
    made.append(gcm.sid)
    assert (gcm.type, gcm.sandbox, gcm.friendly_name) == ("gcm", "False", None)

    fcm_key = client.chat.v2.credentials.create(
        type="fcm", friendly_name="legacy key", secret="AAAAhelper:APA91bHeraldServerKey")
    made.append(fcm_key.sid)
    assert fcm_key.type == "fcm"

    fcm_account = client.chat.v2.credentials.create(
        type="fcm", secret=read_testdata("fcm-service-account.json"))
    made.append(fcm_account.sid)

    # Piecemeal, as on Twilio: create bare, add the secret later.
    bare = client.chat.v2.credentials.create(type="gcm")
    made.append(bare.sid)
    filled = client.chat.v2.credentials(bare.sid).update(api_key="AIzaSyLater")
    assert filled.sid == bare.sid

    for credential in (gcm, fcm_key, fcm_account, filled):
        # No secret comes back: the instance has exactly Twilio's properties.
        props = {k for k in vars(credential) if not k.startswith("_")}
        assert props == {"sid", "account_sid", "friendly_name", "type", "sandbox",
                         "date_created", "date_updated", "url"}


def test_list_and_stream_across_pages(client, http, made):
    for i in range(5):
        made.append(client.chat.v2.credentials.create(
            type="gcm", friendly_name=f"page test {i}", api_key=f"AIzaSyPage{i}").sid)

    before = len(http.requests)
    listed = client.chat.v2.credentials.list(page_size=2)
    sids = [c.sid for c in listed]
    assert len(sids) == len(set(sids)), "no credential twice"
    assert set(made) <= set(sids)
    follow_ups = [r for r in http.requests[before:] if "PageToken" in r[1]]
    assert len(follow_ups) >= 2, "five credentials at two a page take three requests"
    for _, url, params, _ in follow_ups:
        assert url.startswith(f"{BASE_URL}/v2/Credentials?PageSize=2&Page=")
        assert params == {}, "next_page_url is followed verbatim"

    # Newest first: the five appear in reverse order of creation.
    order = [sid for sid in sids if sid in made]
    assert order == list(reversed(made))

    streamed = [c.sid for c in client.chat.v2.credentials.stream(page_size=2)]
    assert streamed == sids
    limited = client.chat.v2.credentials.list(limit=3, page_size=2)
    assert [c.sid for c in limited] == sids[:3]

    # Page objects: forward and back.
    first = client.chat.v2.credentials.page(page_size=2)
    assert first.previous_page() is None
    second = first.next_page()
    assert second is not None
    assert [c.sid for c in second] == sids[2:4]
    back = second.previous_page()
    assert [c.sid for c in back] == sids[:2]


def test_errors_reach_the_library_as_twilio_exceptions(client, made):
    with pytest.raises(TwilioRestException) as caught:
        client.chat.v2.credentials.create(type="apns")
    assert caught.value.status == 400
    assert caught.value.code == 20001
    assert "Type" in caught.value.msg

    with pytest.raises(TwilioRestException) as caught:
        client.chat.v2.credentials.create(type="apn", friendly_name="x" * 65)
    assert caught.value.code == 20001
    assert "FriendlyName" in caught.value.msg

    with pytest.raises(TwilioRestException) as caught:
        client.chat.v2.credentials.create(
            type="apn",
            certificate=read_testdata("apns-cert.pem"),
            private_key=read_testdata("other-rsa-key.pem"),
        )
    assert caught.value.status == 400
    assert caught.value.code == 52005
    assert "PrivateKey" in caught.value.msg
    assert "BEGIN" not in caught.value.msg.replace("-----BEGIN line", "")

    with pytest.raises(TwilioRestException) as caught:
        client.chat.v2.credentials.create(type="gcm", api_key="")
    assert caught.value.code in (20001, 52005)

    with pytest.raises(TwilioRestException) as caught:
        client.chat.v2.credentials("CR" + "0" * 32).fetch()
    assert caught.value.status == 404

    credential = client.chat.v2.credentials.create(type="apn")
    made.append(credential.sid)
    with pytest.raises(TwilioRestException) as caught:
        credential.update(api_key="AIzaSyWrongType")
    assert caught.value.status == 400
    assert "ApiKey" in caught.value.msg

    # Nothing was stored by the refused creates.
    names = {c.friendly_name for c in client.chat.v2.credentials.list()}
    assert "x" * 65 not in names


def test_wrong_auth_token_is_refused(made):
    other = Client(ACCOUNT_SID, "0" * 32, http_client=HeraldHttpClient(BASE_URL))
    with pytest.raises(TwilioRestException) as caught:
        other.chat.v2.credentials("CR" + "0" * 32).fetch()
    assert caught.value.status == 401
    assert caught.value.code == 20003
    with pytest.raises(TwilioRestException) as caught:
        other.chat.v2.credentials.create(type="gcm")
    assert caught.value.status == 401
    # A list page that is not 200 is a plain TwilioException in the library ("Unable to fetch
    # page"), carrying the response.
    with pytest.raises(TwilioException) as caught:
        other.chat.v2.credentials.list(limit=1)
    assert "401" in str(caught.value)
