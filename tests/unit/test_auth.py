"""Access tokens: minting, verification, grants, and the secret file."""

from __future__ import annotations

from pathlib import Path

import jwt
import pytest

from townhall.auth import TokenIssuer, load_or_create_secret
from townhall.problems import Unauthorized

SECRET = b"s" * 64


def test_round_trip_carries_identity_name_space_role() -> None:
    issuer = TokenIssuer(SECRET)
    ident = issuer.verify(issuer.mint("ada", "Ada", space="abc", role="speaker"))
    assert (ident.id, ident.name, ident.space, ident.role) == ("ada", "Ada", "abc", "speaker")


def test_expired_token_is_refused() -> None:
    issuer = TokenIssuer(SECRET)
    token = issuer.mint("ada", "Ada", ttl=10, now=1000)
    with pytest.raises(Unauthorized) as err:
        issuer.verify(token, now=2000)
    assert err.value.instance_slug == "token-expired"


def test_forged_token_is_refused() -> None:
    forged = jwt.encode({"iss": "townhall", "sub": "ada", "exp": 2**33, "role": "host"},
                        b"x" * 64, algorithm="HS256")
    with pytest.raises(Unauthorized):
        TokenIssuer(SECRET).verify(forged)


def test_none_algorithm_is_refused() -> None:
    unsigned = jwt.encode({"iss": "townhall", "sub": "ada", "exp": 2**33}, None,  # type: ignore[arg-type]
                          algorithm="none")
    with pytest.raises(Unauthorized):
        TokenIssuer(SECRET).verify(unsigned)


@pytest.mark.parametrize("header", [None, "", "Basic abc", "Bearer ", "Bearer not.a.jwt"])
def test_bad_headers_are_unauthorized(header: str | None) -> None:
    with pytest.raises(Unauthorized):
        TokenIssuer(SECRET).from_header(header)


def test_tokens_carry_role_space_and_guest_claims() -> None:
    issuer = TokenIssuer(SECRET)
    speaker = issuer.verify(issuer.mint("bo", "Bo", space="one", role="speaker"))
    assert (speaker.role, speaker.space, speaker.guest, speaker.net) == (
        "speaker", "one", False, None)
    guest = issuer.verify(issuer.mint("g-1", "G", guest=True, net="abc"))
    assert (guest.role, guest.space, guest.guest, guest.net) == ("host", None, True, "abc")
    # What a grant allows is townhall.grants' decision (tests/unit/test_grants.py).
    with pytest.raises(ValueError):
        issuer.mint("bo\n", "Bo")


def test_secret_is_created_once_with_mode_0600(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOWNHALL_TOKEN_SECRET", raising=False)
    first = load_or_create_secret(tmp_path)
    assert (tmp_path / "token-secret").stat().st_mode & 0o777 == 0o600
    assert load_or_create_secret(tmp_path) == first
    assert len(first) >= 32
