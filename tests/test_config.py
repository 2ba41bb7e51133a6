"""Configuration: defaults <- TOML file <- command-line options."""

from __future__ import annotations

from pathlib import Path

import pytest

from pxed import config


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
    example = Path(__file__).parent.parent / "etc" / "pxed.toml"
    assert config.load(example) == config.load()


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
        ("this is not toml", {}, "config"),
        ('database = "not a url"', {}, "database"),
    ],
)
def test_bad_settings_name_the_setting(tmp_path, text, overrides, setting):
    with pytest.raises(config.ConfigError) as e:
        config.load(write(tmp_path, text), overrides)
    assert str(e.value).startswith(setting + ":") or setting in str(e.value)
    assert "\n" not in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(config.ConfigError, match="not found"):
        config.load(tmp_path / "nope.toml")
