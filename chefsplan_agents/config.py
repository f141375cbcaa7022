"""Typed settings, read from a TOML file and ``CHEFSPLAN_*`` environment variables.

Precedence, lowest to highest: built-in defaults (the *embedded* network: no chain node, no IPFS
daemon), the TOML file's top-level tables, the selected ``[profiles.NAME]`` table, environment
variables, then explicit overrides passed in code.

Example ``chefsplan.toml``::

    data_dir = "~/.local/share/chefsplan"

    [storage]
    backend = "local"            # "memory" | "local" | "kubo"

    [profiles.testnet.chain]
    backend = "jsonrpc"
    rpc_url = "http://127.0.0.1:8545"

    [profiles.testnet.storage]
    backend = "kubo"
    ipfs_api = "/ip4/127.0.0.1/tcp/5001/http"

Environment variables use ``__`` between levels: ``CHEFSPLAN_STORAGE__BACKEND=kubo``,
``CHEFSPLAN_CHAIN__RPC_URL=http://…``. ``CHEFSPLAN_PROFILE`` picks a profile and
``CHEFSPLAN_CONFIG`` points at the file.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from chefsplan_agents import _json
from chefsplan_agents._tags import check_tags
from chefsplan_agents.errors import ConfigError

__all__ = [
    "ChainSettings",
    "LLMSettings",
    "PolicySettings",
    "Settings",
    "StorageSettings",
    "default_config_path",
    "load_settings",
]

ENV_PREFIX = "CHEFSPLAN_"


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "chefsplan"


def default_config_path() -> Path:
    """The config file read when none is given: ``$CHEFSPLAN_CONFIG`` or the XDG location."""
    explicit = os.environ.get(ENV_PREFIX + "CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "chefsplan" / "config.toml"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StorageSettings(_Section):
    """Where content (bundles, results, offers) is stored."""

    backend: Literal["memory", "local", "kubo"] = "local"
    path: Path | None = Field(
        default=None,
        description="Blockstore folder for the local backend (default: data_dir/blocks).",
    )
    ipfs_api: str = Field(
        default="/ip4/127.0.0.1/tcp/5001/http", description="Multiaddr of an IPFS daemon's RPC API."
    )
    timeout_s: float = Field(default=30.0, gt=0)
    cid_version: Literal[0, 1] = 1
    max_bundle_bytes: int = Field(default=4 * 1024 * 1024, gt=0)


class ChainSettings(_Section):
    """Which EVM chain carries agreements, money and the audit log."""

    backend: Literal["embedded", "jsonrpc"] = "embedded"
    rpc_url: str = "http://127.0.0.1:8545"
    chain_id: int | None = None
    contracts: dict[str, str] = Field(
        default_factory=dict,
        description="Deployed contract addresses by name; empty means deploy fresh ones.",
    )
    timeout_s: float = Field(default=30.0, gt=0)
    confirmations: int = Field(default=0, ge=0)


class LLMSettings(_Section):
    """The local model a node serves or an agent runs."""

    model: str = "smollm2-135m"
    sha256: str | None = Field(default=None, description="Pin the model file's sha256.")
    n_threads: int = Field(default=2, ge=1)
    n_ctx: int = Field(default=2048, ge=64)
    n_batch: int = Field(default=512, ge=1)
    seed: int = 0
    server_url: str | None = Field(
        default=None, description="An OpenAI-compatible llama.cpp server; None runs in process."
    )


class PolicySettings(_Section):
    """An app's business rules for delegated outputs and spending (``[policy]``).

    Every rule is off by default. ``check_policy`` (in ``chefsplan_agents.tools``) applies the
    output rules; the spending cap is enforced before a task is posted.
    """

    forbidden_words: tuple[str, ...] = Field(
        default=(), description="Words an output must not contain (whole words, any case)."
    )
    forbidden_patterns: tuple[str, ...] = Field(
        default=(), description="Regular expressions an output must not match."
    )
    max_output_chars: int | None = Field(default=None, ge=1)
    json_schema: dict[str, Any] | None = Field(
        default=None, description="A JSON Schema the output must be a JSON document of."
    )
    spending_cap_wei: int | None = Field(
        default=None, ge=0, description="Most wei of bounties one network handle may escrow."
    )
    max_spend_per_task_wei: int | None = Field(
        default=None,
        ge=0,
        description="Most wei the agents may put on chain for one task: its escrow, and the "
        "bond of a challenge against it.",
    )
    challenge_window_s: int = Field(
        default=0,
        ge=0,
        le=7 * 24 * 3600,
        description="Seconds between a task's last reveal and its settlement, in which the "
        "Compliance agent may challenge it (0: tasks settle at once and cannot be challenged).",
    )
    sensitive_patterns: tuple[str, ...] = Field(
        default=(),
        description="Regular expressions that mark a request's data as sensitive.",
    )
    sensitive_providers: tuple[str, ...] = Field(
        default=(),
        description="DIDs or EVM addresses of the providers trusted with sensitive data.",
    )
    sensitive_models: tuple[str, ...] = Field(
        default=(),
        description="Model names or GGUF sha256s a provider's signed offer must name to be "
        "sent sensitive data.",
    )
    sensitive_max_price_per_1k_wei: int | None = Field(
        default=None,
        ge=0,
        description="Highest offered price per 1,000 tokens for a provider of sensitive data.",
    )
    sensitive_tags: dict[str, str] = Field(
        default_factory=dict,
        description="Tags a provider's signed offer must state, each with this value, to be "
        'sent sensitive data, e.g. {jurisdiction = "EU"}.',
    )
    judge_rules: tuple[str, ...] = Field(
        default=(),
        description="Fuzzy rules a local model judges an output by, each a yes/no question "
        "whose 'yes' means the output complies.",
    )

    @field_validator("forbidden_patterns", "sensitive_patterns")
    @classmethod
    def _patterns_compile(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as err:
                raise ValueError(f"pattern {pattern!r} is not a regular expression: {err}") from err
        return value

    @field_validator("sensitive_tags")
    @classmethod
    def _tags_are_valid(cls, value: dict[str, str]) -> dict[str, str]:
        return check_tags(value)

    @field_validator("json_schema")
    @classmethod
    def _schema_is_valid(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            import jsonschema  # only when a schema is configured

            try:
                jsonschema.validators.validator_for(value).check_schema(value)
            except jsonschema.SchemaError as err:
                raise ValueError(f"json_schema is not a valid JSON Schema: {err.message}") from err
        return value


class Settings(_Section):
    """All settings. ``Settings()`` is the embedded, offline default."""

    profile: str = "default"
    data_dir: Path = Field(default_factory=_default_data_dir)
    keystore: Path | None = Field(
        default=None, description="Encrypted key file (default: data_dir/key.json)."
    )
    storage: StorageSettings = Field(default_factory=StorageSettings)
    chain: ChainSettings = Field(default_factory=ChainSettings)
    llm: LLMSettings = Field(default_factory=LLMSettings)
    policy: PolicySettings = Field(default_factory=PolicySettings)

    @property
    def blockstore_path(self) -> Path:
        return (self.storage.path or self.data_dir / "blocks").expanduser()

    @property
    def keystore_path(self) -> Path:
        return (self.keystore or self.data_dir / "key.json").expanduser()


def _deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX) or name in (
            ENV_PREFIX + "CONFIG",
            ENV_PREFIX + "PROFILE",
        ):
            continue
        path = [part.lower() for part in name[len(ENV_PREFIX) :].split("__") if part]
        # Other CHEFSPLAN_* variables (the keystore passphrase, test-harness addresses) are not
        # settings: only a name whose first part is a settings field is read.
        if not path or path[0] not in Settings.model_fields:
            continue
        value: Any = raw
        # Structured values (the contracts table) may be given as JSON.
        if raw[:1] in "{[":
            try:
                value = _json.loads(raw)
            except _json.JsonTooDeep as err:
                raise ConfigError(f"${name} is refused: {err}") from err
            except ValueError:
                value = raw
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return out


def load_settings(
    path: str | Path | None = None,
    *,
    profile: str | None = None,
    env: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Read settings from a TOML file, a profile, environment variables and overrides.

    Args:
        path: The TOML file. ``None`` reads :func:`default_config_path` if it exists; an explicit
            path that does not exist is an error.
        profile: A ``[profiles.NAME]`` table to apply; defaults to ``$CHEFSPLAN_PROFILE``.
        env: Environment to read ``CHEFSPLAN_*`` variables from (default ``os.environ``).
        **overrides: Top-level values that win over everything else (nested as dicts).

    Returns:
        The validated settings.

    Raises:
        ConfigError: The file is missing or not TOML, the profile is unknown, or a value is
            invalid. The message names the offending key.
    """
    env = os.environ if env is None else env
    explicit = path is not None
    file = Path(path).expanduser() if path is not None else default_config_path()
    data: dict[str, Any] = {}
    if file.exists():
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(f"config file {file} is not valid TOML: {err}") from err
        except RecursionError as err:  # tomllib recurses once per nested array or table
            raise ConfigError(f"config file {file} nests too deeply to read") from err
    elif explicit:
        raise ConfigError(f"config file {file} does not exist")

    profiles = data.pop("profiles", {})
    chosen = profile or env.get(ENV_PREFIX + "PROFILE")
    if chosen and chosen != "default":
        if chosen not in profiles:
            known = ", ".join(sorted(profiles)) or "none"
            raise ConfigError(f"unknown profile {chosen!r} in {file} (known: {known})")
        data = _deep_merge(data, profiles[chosen])
        data["profile"] = chosen
    data = _deep_merge(data, _env_overrides(env))
    data = _deep_merge(data, overrides)
    try:
        return Settings.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        raise ConfigError(f"invalid setting {where}: {first['msg']}") from err
