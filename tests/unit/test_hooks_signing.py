"""Standard Webhooks signatures: the spec's own test vector, rotation, bad secrets."""

import base64
import hashlib
import hmac

import pytest

from townhall.hooks.signing import Signer, parse_secret

# The example in the Standard Webhooks specification and its reference libraries.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TS = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_the_specs_vector() -> None:
    assert Signer.from_secrets(SPEC_SECRET).signature(SPEC_ID, SPEC_TS, SPEC_BODY) \
        == SPEC_SIGNATURE


def test_headers_of_an_attempt() -> None:
    headers = Signer.from_secrets(SPEC_SECRET).headers(SPEC_ID, SPEC_TS, SPEC_BODY)
    assert headers["webhook-id"] == SPEC_ID
    assert headers["webhook-timestamp"] == str(SPEC_TS)
    assert headers["webhook-signature"] == SPEC_SIGNATURE
    assert headers["content-type"] == "application/json"


def test_a_changed_body_or_timestamp_changes_the_signature() -> None:
    signer = Signer.from_secrets(SPEC_SECRET)
    assert signer.signature(SPEC_ID, SPEC_TS + 1, SPEC_BODY) != SPEC_SIGNATURE
    assert signer.signature(SPEC_ID, SPEC_TS, SPEC_BODY + b" ") != SPEC_SIGNATURE


def test_rotation_signs_with_every_secret() -> None:
    other = "whsec_" + base64.b64encode(b"k" * 32).decode()
    sig = Signer.from_secrets(SPEC_SECRET, other).signature(SPEC_ID, SPEC_TS, SPEC_BODY)
    first, second = sig.split(" ")
    assert first == SPEC_SIGNATURE
    mac = hmac.new(b"k" * 32, f"{SPEC_ID}.{SPEC_TS}.".encode() + SPEC_BODY, hashlib.sha256)
    assert second == "v1," + base64.b64encode(mac.digest()).decode()


@pytest.mark.parametrize("secret", [
    "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",                 # no prefix
    "whsec_not base64!",
    "whsec_" + base64.b64encode(b"short").decode(),     # under 24 bytes
    "whsec_" + base64.b64encode(b"x" * 65).decode(),    # over 64 bytes
])
def test_bad_secrets_are_refused(secret: str) -> None:
    with pytest.raises(ValueError):
        parse_secret(secret)
