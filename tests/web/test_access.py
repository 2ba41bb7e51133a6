"""Every route in the app's route table, called as anonymous, a user, another
user, a moderator, an admin, a management OS and an unknown machine
enlisting (another MAC's), gets what its access rule promises.  A route
added without a rule, or with a path parameter this test has no sample
for, fails here."""

from __future__ import annotations

import datetime as dt
import re
import shutil

import pytest
import pytest_twisted

from pxed.db import builds
from pxed.web.app import ROUTES
from tests.conftest import database_rows
from tests.helpers import MAC, add_machine, machine_client, new_image, new_setup

OK = "allowed"

# access rule -> identity -> expected outcome (a status, or OK = neither 401 nor 403)
# The enlistment credential ("enlist") is for an unknown MAC, not the
# sample machine's: it may register that MAC's inventory and nothing else,
# so every route but the public ones refuses it.
EXPECT: dict[str, dict[str, object]] = {
    "public": dict(anonymous=OK, alice=OK, bob=OK, mod=OK, admin=OK, machine=OK, enlist=OK),
    "signed-in": dict(anonymous=401, alice=OK, bob=OK, mod=OK, admin=OK, machine=403, enlist=403),
    "owner": dict(anonymous=401, alice=OK, bob=403, mod=OK, admin=OK, machine=403, enlist=403),
    "moderator": dict(anonymous=401, alice=403, bob=403, mod=OK, admin=OK, machine=403, enlist=403),
    "admin": dict(anonymous=401, alice=403, bob=403, mod=403, admin=OK, machine=403, enlist=403),
    "self-or-staff": dict(
        anonymous=401, alice=OK, bob=403, mod=OK, admin=OK, machine=403, enlist=403
    ),
    "self-or-admin": dict(
        anonymous=401, alice=OK, bob=403, mod=403, admin=OK, machine=403, enlist=403
    ),
    "machine": dict(anonymous=401, alice=403, bob=403, mod=403, admin=OK, machine=OK, enlist=403),
    "machine-or-enlist": dict(
        anonymous=401, alice=403, bob=403, mod=403, admin=OK, machine=OK, enlist=403
    ),
    # The sample image is alice's and not in the machine's current work.
    "owner-or-machine": dict(
        anonymous=401, alice=OK, bob=403, mod=OK, admin=OK, machine=403, enlist=403
    ),
    # metrics_networks is empty here (tests/web/test_metrics.py sets it).
    "metrics": dict(anonymous=401, alice=403, bob=403, mod=403, admin=OK, machine=403, enlist=403),
    # alice has work queued on the sample machine.
    "admin-or-worker": dict(
        anonymous=401, alice=OK, bob=403, mod=403, admin=OK, machine=403, enlist=403
    ),
}
# Refusals first, so an allowed DELETE cannot hide a later refusal.
ORDER = ("anonymous", "machine", "enlist", "bob", "alice", "mod", "admin")
ENLISTING = "52:54:00:0e:00:01"


@pytest_twisted.ensureDeferred
async def test_every_route_has_a_known_rule_and_goes_through_the_table(server):
    served = server.pxed.app.app.url_map.iter_rules()
    rules = {r.endpoint.removesuffix("_branch") for r in served}
    assert rules == set(ROUTES), "a route was registered without @route(..., access=)"
    for info in ROUTES.values():
        assert info.access in EXPECT, f"{info.endpoint}: no expectations for {info.access!r}"


def concrete(path: str, samples: dict[str, str]) -> str:
    def fill(m: re.Match) -> str:
        name = m.group(1).split(":")[-1]
        assert name in samples, f"{path}: no sample value for <{name}>"
        return samples[name]

    return re.sub(r"<([^>]+)>", fill, path)


SETTINGS = dict(boot_policy="always", base_url="http://pxed.test", enlist=True)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory) -> dict:
    """Filled in by the first route test on each database: the data dir of a
    stopped pxed holding the sample users, machine, image, setup, queued work
    and build (and on PostgreSQL its database's rows), with their tokens and
    the values for the path parameters.  Every route test starts its own
    pxed on a fresh copy of them."""
    return {"dir": tmp_path_factory.mktemp("access")}


async def seed(server) -> tuple[dict[str, str], dict[str, str]]:
    """The samples, made through the API; (bearer tokens, path values)."""
    tokens = {}
    for name, role in (("alice", "user"), ("bob", "user"), ("mod", "moderator")):
        tokens[name] = (await server.user(name, role)).headers["Authorization"]
    machine_image = (await add_machine(server))["ImageUUID"]
    tokens["machine"] = (await machine_client(server)).headers["Authorization"]
    tokens["enlist"] = (await machine_client(server, ENLISTING)).headers["Authorization"]
    assert tokens["enlist"].startswith("Bearer pxe_")
    alice = server.anonymous.with_headers(Authorization=tokens["alice"])
    alice_token = (await alice.get("/user/alice/tokens")).json()[0]["ID"]
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEBu2i2P/uExF5yjGB2ciJ4cDeOeALQxl3+QlViZqYJt"
    alice_key = (await alice.post("/user/alice/keys", {"Key": key})).json()["ID"]
    image = await new_image(alice, "disk")
    setup = await new_setup(alice, "alice", [{"UUID": image}])
    work = (await alice.post(f"/machine/{MAC}/boot", {"SetupUUID": setup["UUID"]})).json()
    # Ten days ahead: the lease does not hold the machine while routes run.
    ahead = (dt.datetime.now(dt.UTC) + dt.timedelta(days=10)).isoformat()
    lease = await alice.post("/leases", {"Machines": [MAC], "Start": ahead, "Hours": 1})
    assert lease.code == 201, lease.text
    build = await server.db.run(
        builds.thd_create, image, "alice", "disk", "FROM scratch\n", False, "alice"
    )
    # Finished, so its log answers at once instead of following.
    await server.db.run(builds.thd_finish, build.id, builds.FAILED, "sample")
    samples = {
        "build_id": str(build.id),
        "mac": MAC,
        "name": "alice",
        "token_id": str(alice_token),
        "key_id": str(alice_key),
        "lease_id": str(lease.json()[0]["ID"]),
        "uuid": image,
        "image_name": "disk",
        "version": "0",
        "setup_uuid": setup["UUID"],
        "work_id": str(work["ID"]),
        "machine_image": machine_image,
    }
    return tokens, samples


@pytest.mark.parametrize("endpoint", sorted(ROUTES))
@pytest_twisted.ensureDeferred
async def test_route_access(request, start_server, data_root, seeded, database, endpoint):
    info = ROUTES[endpoint]
    if database not in seeded:
        first = await start_server(**SETTINGS)
        tokens, samples = await seed(first)
        await first.pxed.service.stopService()
        shutil.copytree(first.config.data_dir, seeded["dir"] / database)
        rows = database_rows(request, first)
        seeded[database] = dict(tokens=tokens, samples=samples, rows=rows)
    sample = seeded[database]
    data_dir = data_root / "copy"
    shutil.copytree(seeded["dir"] / database, data_dir)
    server = await start_server(data_dir=str(data_dir), rows=sample["rows"], **SETTINGS)
    clients = {"anonymous": server.anonymous, "admin": server.admin}
    for who, token in sample["tokens"].items():
        clients[who] = server.anonymous.with_headers(Authorization=token)
    samples = dict(sample["samples"])
    if endpoint == "images.upload_machine_disk":
        # The route for a machine's own disk: the sample is the machine image.
        samples["uuid"] = samples["machine_image"]

    path = concrete(info.path, samples)
    for method in info.methods:
        for who in ORDER:
            r = await clients[who].request(method, path, data=b"{}")
            expected = EXPECT[info.access][who]
            if expected == OK:
                # Allowed means served: neither refused nor failed (a 503 is
                # the build route saying no Docker engine is configured).
                assert r.code not in (401, 403, 500), (method, path, who, r.code, r.body)
            else:
                assert r.code == expected, (method, path, who, r.code, r.body)
            assert b"Traceback" not in r.body


@pytest_twisted.ensureDeferred
async def test_type_system_header_grants_nothing(server):
    await add_machine(server)
    system = server.anonymous.with_headers(type="system")
    for method, path in [
        ("GET", "/machines"),
        ("GET", f"/machine/{MAC}"),
        ("DELETE", f"/machine/{MAC}"),
        ("GET", "/users"),
        ("POST", "/user"),
    ]:
        r = await system.request(method, path, data=b'{"Username": "x"}')
        assert r.code == 401, (method, path, r.code)
    assert (await server.admin.get(f"/machine/{MAC}")).code == 200


@pytest_twisted.ensureDeferred
async def test_malformed_authorization_is_401(server):
    for value in (
        "Basic YWRtaW46YWRtaW4=",
        "Bearer",
        "Bearer pxu_nope",
        "Bearer pxm_nope",
        "Bearer pxe_nope",
        "token",
    ):
        r = await server.anonymous.with_headers(Authorization=value).get("/machines")
        assert r.code == 401, value
        assert "error" in r.json()
