"""`sgedge keygen NAME`: an Ed25519 key pair for signing bundles."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    k = sub.add_parser("keygen", help="create an Ed25519 key pair NAME.key / NAME.pub for signing bundles")
    k.add_argument("name")
    k.set_defaults(handler=keygen)


def keygen(args: argparse.Namespace) -> int:
    from sgedge.signing import keygen as make

    kid = make(f"{args.name}.key", f"{args.name}.pub")
    print(f"wrote {args.name}.key (private, keep it secret) and {args.name}.pub (ship it in your app); key id {kid}")
    return 0
