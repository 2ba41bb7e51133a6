"""Fuzzing: schemathesis generates requests from the live ``GET
/openapi.json`` (valid ones and, in its negative mode, ones that break the
schema) and sends them over real HTTP to a running pxed, as the admin and
as anonymous.  No answer may be a 5xx, and every error answer is JSON
``{"error": "…"}``.

The run is bounded and repeatable: a fixed seed, a fixed number of
examples per operation, no example database and no shrinking (a failure
is recorded and the run goes on, so one bug does not hide the others)."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import pytest
import pytest_twisted
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from twisted.internet import threads

from tests.helpers import MAC, MIB, add_machine, new_image, new_setup

SEED = 20260611
# Examples per operation: schema-valid with random path values, schema-valid
# at the sample resources (so handlers get past their lookups), and
# schema-breaking.  Anonymous callers get fewer on routes that need a
# credential (they all end in the same 401).  CI (CI=true) runs many more;
# the inner loop (pytest -m "not e2e and not docker") stays under a minute.
if os.environ.get("CI"):
    ADMIN = dict(positive=9, at_samples=12, negative=9)
    ANONYMOUS = dict(positive=3, at_samples=0, negative=3)
else:
    ADMIN = dict(positive=1, at_samples=2, negative=1)
    ANONYMOUS = dict(positive=1, at_samples=0, negative=1)
# Images the fuzzer creates are kept small: the size limit has its own
# tests, and a shared CI machine should not write terabyte disks.
MAX_FUZZ_SIZE = 4 * MIB


def _harms_the_run(case: Any, admin: str) -> bool:
    """A case that would take the admin's credential away, after which
    every later admin case would be a 401 and fuzz nothing: deleting the
    admin user, changing its role, or deleting one of its tokens (token
    ids are small integers, which the fuzzer tries first).  Only these
    cases are left out, not their operations."""
    method = case.method.upper()
    path = case.operation.path
    name = (case.path_parameters or {}).get("name")
    if name != admin:
        return False
    return (method, path) in {
        ("DELETE", "/user/{name}"),
        ("PUT", "/user/{name}"),
        ("DELETE", "/user/{name}/tokens/{token_id}"),
    }


def _small_sizes(body: Any) -> Any:
    if isinstance(body, dict):
        for key, value in body.items():
            if key.lower() == "size" and isinstance(value, int) and value > MAX_FUZZ_SIZE:
                body[key] = MAX_FUZZ_SIZE
    return body


def _problem(case: Any, response: Any) -> str | None:
    status = response.status_code
    where = f"{case.method} {case.formatted_path} -> {status}"
    if status >= 500:
        return f"{where}: {response.content[:300]!r}"
    if status >= 400 and case.method.upper() != "HEAD":
        try:
            body = json.loads(response.content)
        except ValueError:
            return f"{where}: not JSON: {response.content[:300]!r}"
        if not isinstance(body, dict) or not isinstance(body.get("error"), str):
            return f"{where}: not {{'error': …}}: {response.content[:300]!r}"
    return None


def fuzz(
    url: str, who: str, headers: dict[str, str], samples: dict[str, str], admin: str
) -> tuple[list[str], int]:
    """Runs in a thread (the reactor serves pxed meanwhile); returns the
    problems found and how many requests were made."""
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    problems: list[str] = []
    sent = 0

    def run(operation, mode, count, path_parameters=None) -> None:
        nonlocal sent
        strategy = operation.as_strategy(mode, path_parameters=path_parameters)

        @seed(SEED)
        @settings(
            max_examples=count,
            database=None,
            deadline=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
            print_blob=False,
        )
        @given(case=strategy)
        def examples(case) -> None:
            nonlocal sent
            if _harms_the_run(case, admin):
                return
            case.body = _small_sizes(case.body)
            response = case.call(base_url=url, headers=headers, timeout=30)
            sent += 1
            problem = _problem(case, response)
            if problem is not None:
                problems.append(f"{who} {mode.value}: {problem}")

        try:
            examples()
        except Unsatisfiable:
            pass  # nothing in the operation that its negative mode can break

    # Not GET /events/stream: a stream's answer does not end, and the
    # client here reads whole answers (its parameters: test_stream.py).
    operations = [
        op
        for op in (result.ok() for result in schema.get_all_operations())
        if op.path != "/events/stream"
    ]
    # Deletions last, so the sample resources are there for the others.
    operations.sort(key=lambda op: op.method.upper() == "DELETE")
    for operation in operations:
        public = operation.definition.raw.get("x-pxed-access") == "public"
        counts = ADMIN if who == "admin" or public else ANONYMOUS
        run(operation, GenerationMode.POSITIVE, counts["positive"])
        names = [p.name for p in operation.path_parameters]
        # Only what has parameters or a body can be sent breaking its schema
        # (elsewhere the negative mode finds nothing and retries in vain).
        if names or operation.query or operation.headers or operation.body:
            run(operation, GenerationMode.NEGATIVE, counts["negative"])
        # Not the build route: at a real image it would start Docker builds
        # (the docker-marked tests' business) or, with no engine, answer its
        # designed 503.
        endpoint = operation.definition.raw.get("x-pxed-endpoint")
        if names and counts["at_samples"] and endpoint != "builds.submit_build":
            pinned = {n: samples[n] for n in names if n in samples}
            run(operation, GenerationMode.POSITIVE, counts["at_samples"], pinned)
    return problems, sent


# ~30 s on a loaded 2-core machine (most of it generating the cases).
@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_fuzzing_finds_no_5xx_and_only_json_errors(server):
    # Something for the fuzzer to find at the pinned path values.
    alice = await server.user("alice")
    await add_machine(server)
    image = await new_image(alice, "disk")
    setup = await new_setup(alice, "alice", [{"UUID": image}])
    admin = (await server.admin.get("/user/me")).json()["Username"]
    samples = {
        "mac": MAC,
        "name": "alice",
        "uuid": image,
        "image_name": "disk",
        "setup_uuid": setup["UUID"],
    }
    admin_headers = {"Authorization": server.admin.headers["Authorization"]}

    started = time.monotonic()
    found: list[str] = []
    total = 0
    for who, headers in (("anonymous", {}), ("admin", admin_headers)):
        problems, sent = await threads.deferToThread(fuzz, server.url, who, headers, samples, admin)
        found += problems
        total += sent
    elapsed = time.monotonic() - started
    print(f"fuzz: {total} requests in {elapsed:.1f} s, seed {SEED}")
    assert total > 300
    assert not found, "\n".join(found[:40])
