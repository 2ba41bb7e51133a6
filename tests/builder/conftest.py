from tests.docker_fixtures import base_image, docker_host  # noqa: F401 (fixtures)
