"""Configuration: defaults <- TOML file <- command-line options."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from pxed import config

EXAMPLE = Path(__file__).parent.parent / "etc" / "pxed.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pxed.toml"
    path.write_text(text)
    return path


def test_defaults():
    cfg = config.load()
    assert cfg.port == "tcp:4848"
    assert cfg.data_dir == Path("var")
    assert cfg.boot_policy == "on-demand"
    assert cfg.database_url == f"sqlite:///{Path('var/pxed.sqlite').resolve()}"
    assert cfg.static_path == Path("var/static")
    assert cfg.mgmtos["x86_64"].kernel == "mgmtos/x86_64/vmlinuz"
    # Imports fetch from public addresses only, unless told otherwise.
    assert (cfg.import_allow_private, cfg.import_allow_networks) == (False, ())
    assert (cfg.import_max_bytes, cfg.import_max_redirects) == (0, 5)


def test_file_overrides_defaults_and_options_override_file(tmp_path):
    path = write(
        tmp_path,
        'port = "tcp:9000"\nboot_policy = "always"\n'
        'base_url = "http://10.0.0.1:9000"\n'
        'cors_origins = ["https://ui.example"]\n'
        '[mgmtos.x86_64]\nkernel = "k"\ninitrd = "i"\n',
    )
    cfg = config.load(path)
    assert (cfg.port, cfg.boot_policy, cfg.base_url) == (
        "tcp:9000",
        "always",
        "http://10.0.0.1:9000",
    )
    assert cfg.cors_origins == ("https://ui.example",)
    assert cfg.mgmtos["x86_64"].initrd == ("i",)
    assert cfg.mgmtos["x86_64"].cmdline  # the default cmdline stays
    cfg = config.load(path, {"port": "tcp:9001", "boot_policy": None})
    assert (cfg.port, cfg.boot_policy) == ("tcp:9001", "always")


def test_shipped_example_config_is_valid_and_matches_defaults():
    assert config.load(EXAMPLE) == config.load()


def settings(table: dict[str, Any], prefix: str = "") -> set[str]:
    """Dotted names of every setting in a TOML-shaped table."""
    names = set()
    for key, value in table.items():
        if isinstance(value, dict):
            names |= settings(value, f"{prefix}{key}.")
        else:
            names.add(prefix + key)
    return names


def test_shipped_example_lists_every_setting_with_its_default(tmp_path):
    # Uncomment the "# key = value" and "# [table]" lines (not the indented
    # examples in the prose): that must be a complete config equal to the
    # defaults, so a new field without its documented line fails here.
    setting_line = re.compile(r"^# (\[[\w.]+\]|\w+ = .*)$")
    lines = [m[1] for line in EXAMPLE.read_text().splitlines() if (m := setting_line.match(line))]
    text = "\n".join(lines)
    assert settings(tomllib.loads(text)) == settings(config.defaults())
    assert config.load(write(tmp_path, text), env={}) == config.load(env={})


def test_every_command_line_option_is_a_setting():
    from twisted.plugins.pxed_plugin import Options

    known = config.defaults()
    for name, *_ in Options.optParameters + Options.optFlags:
        if name not in ("config", "no-migrate"):
            assert name.replace("-", "_") in known, name


def test_environment_supplies_the_github_secret(tmp_path):
    path = write(tmp_path, '[github]\nclient_id = "Iv1.x"\n')
    cfg = config.load(path, env={config.GITHUB_SECRET_ENV: "s3cret"})
    assert cfg.github.enabled
    assert "s3cret" not in repr(cfg)


def test_environment_overrides_mgmtos_build(tmp_path):
    path = write(tmp_path, 'mgmtos_build = "auto"\n')
    assert config.load(path, env={}).mgmtos_build == "auto"
    assert config.load(path, env={config.MGMTOS_BUILD_ENV: "off"}).mgmtos_build == "off"
    with pytest.raises(config.ConfigError, match="mgmtos_build: must be one of auto, off"):
        config.load(path, env={config.MGMTOS_BUILD_ENV: "sometimes"})


@pytest.mark.parametrize(
    ("text", "overrides", "setting"),
    [
        ('boot_policy = "sometimes"', {}, "boot_policy"),
        ("", {"boot_policy": "never"}, "boot_policy"),
        ('base_url = "10.0.0.1"', {}, "base_url"),
        ("port = 4848", {}, "port"),
        ('colour = "blue"', {}, "colour"),
        ('cors_origins = "https://x"', {}, "cors_origins"),
        ("[mgmtos.sparc]\nkernel = 'k'", {}, "mgmtos.sparc"),
        ("[mgmtos.x86_64]\nkernal = 'k'", {}, "mgmtos.x86_64.kernal"),
        ("[mgmtos.x86_64]\ninitrd = [1]", {}, "mgmtos.x86_64.initrd"),
        ("[mgmtos.x86_64]\nkernel = ''", {}, "mgmtos.x86_64.kernel"),
        ("mgmtos = 5", {}, "mgmtos"),
        ("this is not toml", {}, "config"),
        ('database = "not a url"', {}, "database"),
        ("session_hours = 0", {}, "session_hours"),
        ("build_concurrency = true", {}, "build_concurrency"),
        ("build_timeout = -1", {}, "build_timeout"),
        ('migrate = "no"', {}, "migrate"),
        ("data_dir = 5", {}, "data_dir"),
        ('cors_origins = ["https://x/path"]', {}, "cors_origins"),
        ('base_url = "http://[::1"', {}, "base_url"),
        ("[github]\nurl = 'github.com'", {}, "github.url"),
        ("[github]\nclient_id = 'x'", {}, "github"),
        ("github = 'x'", {}, "github"),
        ("", {"colour": "blue"}, "colour"),
        ('boot_networks = ["10.0.0.1/8"]', {}, "boot_networks"),
        ('boot_networks = ["lan"]', {}, "boot_networks"),
        ('boot_networks = "10.0.0.0/8"', {}, "boot_networks"),
        ('metrics_networks = ["prometheus"]', {}, "metrics_networks"),
        ('import_allow_networks = ["mirror.lab"]', {}, "import_allow_networks"),
        ('import_allow_networks = ["10.0.0.1/8"]', {}, "import_allow_networks"),
        ("import_max_bytes = -1", {}, "import_max_bytes"),
        ("import_timeout = 0", {}, "import_timeout"),
        ("import_max_redirects = 21", {}, "import_max_redirects"),
        ('import_allow_private = "yes"', {}, "import_allow_private"),
        ("import_concurrency = 0", {}, "import_concurrency"),
        ("import_queue = -1", {}, "import_queue"),
    ],
)
def test_bad_settings_name_the_setting(tmp_path, text, overrides, setting):
    with pytest.raises(config.ConfigError) as e:
        config.load(write(tmp_path, text), overrides)
    assert str(e.value).startswith(setting + ":") or setting in str(e.value)
    assert "\n" not in str(e.value)


def test_messages_say_what_was_expected(tmp_path):
    def error(text: str) -> str:
        with pytest.raises(config.ConfigError) as e:
            config.load(write(tmp_path, text), env={})
        return str(e.value)

    assert error('boot_policy = "x"') == "boot_policy: must be one of on-demand, always, got 'x'"
    assert error("port = 4848") == "port: expected str, got int"
    assert error("build_concurrency = 0") == "build_concurrency: expected int >= 1"
    assert error("prot = 'x'").endswith(
        "unknown setting in " + str(tmp_path / "pxed.toml") + " (did you mean port?)"
    )
    assert error("[mgmtos.sparc]\nkernel = 'k'").endswith("(known: x86_64, arm64)")
    assert error('boot_networks = ["10.0.0.0/33"]').startswith(
        "boot_networks: '10.0.0.0/33' is not a CIDR"
    )


def test_empty_string_leaves_an_optional_setting_unset(tmp_path):
    cfg = config.load(write(tmp_path, 'static_dir = ""'), {"static_dir": ""})
    assert cfg.static_dir is None
    assert cfg.static_path == Path("var/static")
    assert config.load(None, {"static_dir": "~/s"}).static_dir == Path("~/s").expanduser()


def test_missing_file(tmp_path):
    with pytest.raises(config.ConfigError, match="not found"):
        config.load(tmp_path / "nope.toml")
