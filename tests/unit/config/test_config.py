from __future__ import annotations

from pathlib import Path

import pytest

from chefsplan_agents.config import Settings, load_settings
from chefsplan_agents.errors import ConfigError

TOML = """
data_dir = "/srv/chefsplan"

[storage]
backend = "memory"

[llm]
n_threads = 1

[profiles.testnet.chain]
backend = "jsonrpc"
rpc_url = "http://127.0.0.1:9545"

[profiles.testnet.storage]
backend = "kubo"
"""


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "chefsplan.toml"
    path.write_text(TOML)
    return path


def test_defaults_are_the_embedded_network() -> None:
    settings = Settings()
    assert settings.chain.backend == "embedded"
    assert settings.storage.backend == "local"
    assert settings.blockstore_path == settings.data_dir / "blocks"


def test_file_values_apply(config_file: Path) -> None:
    settings = load_settings(config_file, env={})
    assert settings.data_dir == Path("/srv/chefsplan")
    assert settings.storage.backend == "memory"
    assert settings.llm.n_threads == 1
    assert settings.chain.backend == "embedded"  # the profile is not applied unless chosen


def test_profile_overrides_file(config_file: Path) -> None:
    settings = load_settings(config_file, profile="testnet", env={})
    assert settings.profile == "testnet"
    assert settings.chain.backend == "jsonrpc"
    assert settings.chain.rpc_url == "http://127.0.0.1:9545"
    assert settings.storage.backend == "kubo"
    assert settings.llm.n_threads == 1  # untouched keys survive the merge


def test_profile_from_env(config_file: Path) -> None:
    settings = load_settings(config_file, env={"CHEFSPLAN_PROFILE": "testnet"})
    assert settings.chain.backend == "jsonrpc"


def test_env_overrides_profile_and_overrides_win(config_file: Path) -> None:
    env = {
        "CHEFSPLAN_CHAIN__RPC_URL": "http://10.0.0.1:8545",
        "CHEFSPLAN_CHAIN__CONTRACTS": '{"TaskMarket": "0xabc"}',
        "UNRELATED": "x",
        "CHEFSPLAN_TEST_RPC_URL": "http://127.0.0.1:1",  # not a setting: ignored
        "CHEFSPLAN_KEYSTORE_PASSPHRASE": "secret",  # not a setting: ignored
    }
    settings = load_settings(config_file, profile="testnet", env=env, llm={"n_threads": 2})
    assert settings.chain.rpc_url == "http://10.0.0.1:8545"
    assert settings.chain.contracts == {"TaskMarket": "0xabc"}
    assert settings.llm.n_threads == 2


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml", env={})


def test_missing_default_file_is_fine(tmp_path: Path) -> None:
    env = {"CHEFSPLAN_CONFIG": str(tmp_path / "absent.toml")}
    # CHEFSPLAN_CONFIG is read through default_config_path(), which uses os.environ.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CHEFSPLAN_CONFIG", env["CHEFSPLAN_CONFIG"])
        assert load_settings(env={}).storage.backend == "local"


def test_bad_toml_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[storage\nbackend=")
    with pytest.raises(ConfigError, match="not valid TOML") as info:
        load_settings(path, env={})
    assert "\n" not in str(info.value)


def test_unknown_profile_lists_known(config_file: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown profile 'mainnet'.*known: testnet"):
        load_settings(config_file, profile="mainnet", env={})


@pytest.mark.parametrize(
    ("env", "where"),
    [
        ({"CHEFSPLAN_STORAGE__BACKEND": "s3"}, "storage.backend"),
        ({"CHEFSPLAN_LLM__N_THREADS": "0"}, "llm.n_threads"),
        ({"CHEFSPLAN_STORAGE__NO_SUCH_KEY": "1"}, "storage.no_such_key"),
    ],
)
def test_invalid_values_name_the_key(env: dict[str, str], where: str) -> None:
    with pytest.raises(ConfigError, match=f"invalid setting {where}") as info:
        load_settings(None, env=env)
    assert isinstance(info.value, ValueError)  # builtins mixed in where meaning matches


def test_sensitive_tags_are_read_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "tags.toml"
    path.write_text('[policy]\nsensitive_tags = { jurisdiction = "EU" }\n')
    assert load_settings(path, env={}).policy.sensitive_tags == {"jurisdiction": "EU"}
    path.write_text('[policy]\nsensitive_tags = { Jurisdiction = "EU" }\n')
    with pytest.raises(ConfigError, match="invalid setting policy.sensitive_tags") as info:
        load_settings(path, env={})
    assert "\n" not in str(info.value) and "tag key 'Jurisdiction'" in str(info.value)
