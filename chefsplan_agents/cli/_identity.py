"""``chefsplan id``: create and inspect this machine's identity (a did:key and an EVM account)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.text import Text

from chefsplan_agents.cli._app import JsonOption, app, err, out, print_json, settings
from chefsplan_agents.errors import ChefsplanError, IdentityError, KeystoreError
from chefsplan_agents.identity import (
    PASSPHRASE_ENV,
    Identity,
    encode_signature,
    load_keystore,
    read_keystore_info,
    save_keystore,
    verify_signature,
)

id_app = typer.Typer(
    name="id",
    help="Create and inspect the identity (did:key + EVM account) in the encrypted keystore.",
    no_args_is_help=True,
)
app.add_typer(id_app, name="id")

KeystoreOption = Annotated[
    Path | None,
    typer.Option(
        "--keystore",
        "-k",
        help="Keystore file (default: the `keystore` setting, data_dir/key.json).",
    ),
]


def _say(console: Console, text: str) -> None:
    # DIDs contain ":key:", which rich would turn into an emoji; print text as is.
    console.print(text, markup=False, emoji=False)


@contextmanager
def _one_line_errors() -> Iterator[None]:
    # Same output as the app's error boundary, but without markup/emoji parsing of the message
    # (which would turn "did:key:" into an emoji and eat "[...]").
    try:
        yield
    except ChefsplanError as exc:
        err.print(Text.assemble(("error:", "red"), " ", str(exc)))
        raise typer.Exit(1) from exc


def _keystore_path(keystore: Path | None) -> Path:
    return keystore.expanduser() if keystore is not None else settings().keystore_path


def passphrase(*, confirm: bool) -> str:
    from_env = os.environ.get(PASSPHRASE_ENV)
    if from_env:
        return from_env
    value: str = typer.prompt(
        "Keystore passphrase", hide_input=True, confirmation_prompt=confirm, err=True
    )
    if not value:
        raise KeystoreError(
            f"an empty passphrase is not allowed; set ${PASSPHRASE_ENV} or type one"
        )
    return value


def _read_bytes(file: Path) -> bytes:
    try:
        return file.read_bytes()
    except OSError as exc:
        raise IdentityError(f"cannot read {file}: {exc.strerror or exc}") from exc


@id_app.command("new")
def new_command(
    keystore: KeystoreOption = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing keystore (its keys are lost).")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Create a new identity and save it encrypted (passphrase from $CHEFSPLAN_KEYSTORE_PASSPHRASE
    or a prompt)."""
    with _one_line_errors():
        path = _keystore_path(keystore)
        if path.exists() and not force:
            raise KeystoreError(f"keystore {path} already exists; use --force to replace it")
        identity = Identity.generate()
        save_keystore(identity, path, passphrase(confirm=True), overwrite=force)
    _say(err, f"created keystore {path}")
    if as_json:
        print_json({"did": identity.did, "address": identity.address, "keystore": str(path)})
        return
    _say(out, f"did: {identity.did}")
    _say(out, f"address: {identity.address}")


@id_app.command("show")
def show_command(
    keystore: KeystoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Print the DID and EVM address of the keystore (never its keys; no passphrase needed)."""
    with _one_line_errors():
        info = read_keystore_info(_keystore_path(keystore))
    if as_json:
        print_json({"did": info.did, "address": info.address, "keystore": str(info.path)})
    else:
        _say(out, f"did: {info.did}")
        _say(out, f"address: {info.address}")


@id_app.command("sign")
def sign_command(
    file: Annotated[Path, typer.Argument(help="The file whose bytes to sign.")],
    keystore: KeystoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Print a base64url Ed25519 signature of FILE by the keystore's DID."""
    with _one_line_errors():
        data = _read_bytes(file)
        identity = load_keystore(_keystore_path(keystore), passphrase(confirm=False))
    signature = encode_signature(identity.sign(data))
    if as_json:
        print_json({"did": identity.did, "file": str(file), "signature": signature})
    else:
        _say(out, signature)


@id_app.command("verify")
def verify_command(
    file: Annotated[Path, typer.Argument(help="The signed file.")],
    signature: Annotated[str, typer.Option("--signature", "-s", help="Base64url signature.")],
    did: Annotated[str, typer.Option("--did", help="The signer's did:key.")],
    as_json: JsonOption = False,
) -> None:
    """Check that SIGNATURE over FILE was made by DID (resolved offline); exit 1 if not."""
    with _one_line_errors():
        verify_signature(did, _read_bytes(file), signature)
    if as_json:
        print_json({"valid": True, "did": did, "file": str(file)})
    else:
        _say(out, f"valid signature by {did}")
