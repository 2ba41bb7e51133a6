"""A real Docker engine for the builder tests, and a base image imported from
a busybox-static root filesystem (no registry is reachable).  A pytest
plugin, loaded by ``pytest_plugins`` in tests/conftest.py: the fixtures
``docker_host`` and ``base_image`` are there for every test; a test that
uses them is marked ``docker`` (done here, so none is missed) and its
servers run on SQLite only: these tests are about Docker builds, whose
rows the API tests already cover on both databases."""

from __future__ import annotations

import contextlib

import pytest

from pxed.testing.dockerd import NoEngine, import_base_image, shared_engine
from tests.helpers import missing, only_on


@pytest.fixture(scope="session")
def docker_host():
    """The engine the tests use (see find_or_start_engine), shared with
    the run's other xdist workers."""
    with contextlib.ExitStack() as stack:
        try:
            host = stack.enter_context(shared_engine())
        except NoEngine as e:
            missing(str(e))
        yield host


@pytest.fixture(scope="session")
def base_image(docker_host, tmp_path_factory):
    try:
        return import_base_image(docker_host, tmp_path_factory.mktemp("busybox"))
    except NoEngine as e:
        missing(str(e))


DOCKER_FIXTURES = {"docker_host", "base_image"}


@pytest.hookimpl(tryfirst=True)  # before pytest turns markers into calls
def pytest_generate_tests(metafunc):
    if not (DOCKER_FIXTURES & set(metafunc.fixturenames) and "database" in metafunc.fixturenames):
        return
    for mark in metafunc.definition.iter_markers("parametrize"):
        names = mark.args[0]
        if "database" in (names.replace(" ", "").split(",") if isinstance(names, str) else names):
            return  # a test that names its databases gets them
    metafunc.definition.add_marker(only_on("sqlite", "Docker builds, not the database"))


def pytest_collection_modifyitems(items):
    for item in items:
        if DOCKER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.docker)
