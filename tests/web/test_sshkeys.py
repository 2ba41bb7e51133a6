"""Users' SSH public keys: what pxed writes into the machines they deploy."""

from __future__ import annotations

import base64
import hashlib

import pytest
import pytest_twisted
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from pxed import sshkey
from pxed.db.errors import InvalidError
from pxed.db.sshkeys import MAX_KEYS_PER_USER


def openssh(private) -> str:
    return (
        private.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )


def ed25519_key(comment: str = "alice@laptop") -> str:
    return f"{openssh(ed25519.Ed25519PrivateKey.generate())} {comment}".strip()


@pytest_twisted.ensureDeferred
async def test_add_list_delete(server):
    alice = await server.user("alice")
    line = ed25519_key()
    r = await alice.post("/user/alice/keys", {"Key": line})
    assert r.code == 201, r.text
    added = r.json()
    assert added["Key"] == line and added["Type"] == "ssh-ed25519"
    assert added["Comment"] == "alice@laptop" and added["Bits"] == 256
    # What `ssh-keygen -l` prints for it: SHA256 of the blob, unpadded.
    digest = hashlib.sha256(base64.b64decode(line.split()[1])).digest()
    assert added["Fingerprint"] == "SHA256:" + base64.b64encode(digest).decode().rstrip("=")

    rsa_line = openssh(rsa.generate_private_key(65537, 3072))
    r = await alice.post("/user/alice/keys", {"Key": rsa_line})
    assert r.code == 201 and r.json()["Bits"] == 3072 and r.json()["Comment"] == ""
    ecdsa = openssh(ec.generate_private_key(ec.SECP384R1()))
    assert (await alice.post("/user/alice/keys", {"Key": ecdsa})).json()["Bits"] == 384

    listed = (await alice.get("/user/alice/keys")).json()
    assert [k["Key"] for k in listed] == [line, rsa_line, ecdsa]
    assert (await alice.delete(f"/user/alice/keys/{added['ID']}")).code == 200
    assert [k["Key"] for k in (await alice.get("/user/alice/keys")).json()] == [rsa_line, ecdsa]
    assert (await alice.delete(f"/user/alice/keys/{added['ID']}")).code == 404
    actions = [e["Action"] for e in (await server.admin.get("/events?target=alice")).json()]
    assert actions.count("user.key.add") == 3 and actions.count("user.key.delete") == 1


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("", "expected"),
        ("ssh-ed25519", "expected"),
        ("ssh-ed25519 AAAA!!notbase64", "not a valid ssh-ed25519"),
        # An RSA blob labelled ed25519, and authorized_keys options.
        ("ssh-ed25519 {rsa}", "not a valid ssh-ed25519"),
        ('from="10.0.0.1" ssh-ed25519 {ed}', "is not one of"),
        ("ssh-dss AAAAB3NzaC1kc3M=", "is not one of"),
        ("{small_rsa}", "at least 2048 bits"),
        ("{ed} one\n{ed} two", "one line"),
        ("{ed} bell\x07", "control characters"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_a_key_that_does_not_parse_is_a_400_and_nothing_is_kept(server, key, reason):
    key = key.format(
        rsa=openssh(rsa.generate_private_key(65537, 2048)).split()[1],
        small_rsa=openssh(rsa.generate_private_key(65537, 1024)),  # noqa: S505 - refused
        ed=openssh(ed25519.Ed25519PrivateKey.generate()),
    )
    alice = await server.user("alice")
    r = await alice.post("/user/alice/keys", {"Key": key})
    assert r.code == 400 and reason in r.json()["error"], r.text
    assert (await alice.get("/user/alice/keys")).json() == []


def test_huge_key_refused_before_parsing():
    with pytest.raises(InvalidError, match="longer than"):
        sshkey.parse("ssh-rsa " + "A" * sshkey.MAX_LINE)


@pytest_twisted.ensureDeferred
async def test_who_may_read_and_change_keys(server):
    alice = await server.user("alice")
    bob = await server.user("bob")
    moderator = await server.user("mo", role="moderator")
    line = ed25519_key()
    # Adding a key to someone is a way into his machines: only he and admins.
    assert (await bob.post("/user/alice/keys", {"Key": line})).code == 403
    assert (await moderator.post("/user/alice/keys", {"Key": line})).code == 403
    assert (await server.admin.post("/user/alice/keys", {"Key": line})).code == 201
    key_id = (await alice.get("/user/alice/keys")).json()[0]["ID"]
    assert (await bob.get("/user/alice/keys")).code == 403
    assert (await moderator.get("/user/alice/keys")).code == 200
    assert (await bob.delete(f"/user/alice/keys/{key_id}")).code == 403
    # Another user's key id under one's own name is not found, not deleted.
    assert (await bob.delete(f"/user/bob/keys/{key_id}")).code == 404
    assert len((await alice.get("/user/alice/keys")).json()) == 1
    assert (await server.anonymous.get("/user/alice/keys")).code == 401
    assert (await server.admin.get("/user/nobody/keys")).code == 404


@pytest_twisted.ensureDeferred
async def test_duplicates_and_the_bound(server):
    alice = await server.user("alice")
    line = ed25519_key()
    assert (await alice.post("/user/alice/keys", {"Key": line})).code == 201
    # The same key under another comment is the same key.
    again = await alice.post("/user/alice/keys", {"Key": line.rsplit(" ", 1)[0] + " other"})
    assert again.code == 409 and "already has" in again.json()["error"]
    for _ in range(MAX_KEYS_PER_USER - 1):
        assert (await alice.post("/user/alice/keys", {"Key": ed25519_key()})).code == 201
    over = await alice.post("/user/alice/keys", {"Key": ed25519_key()})
    assert over.code == 409 and str(MAX_KEYS_PER_USER) in over.json()["error"]


@pytest_twisted.ensureDeferred
async def test_keys_go_with_their_user(server):
    await server.user("alice")
    assert (await server.admin.post("/user/alice/keys", {"Key": ed25519_key()})).code == 201
    assert (await server.admin.delete("/user/alice")).code == 200
    # A new alice is someone else and has none of the old one's keys.
    await server.user("alice")
    assert (await server.admin.get("/user/alice/keys")).json() == []
