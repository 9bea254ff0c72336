"""`likeness identities list | show NAME | remove NAME`: manage enrolled identities.

Identities are biometric data kept only under $LIKENESS_HOME/identities; ``remove`` deletes
the file itself.
"""

from __future__ import annotations

import argparse

from ..identity_store import IdentityStore

SHOW_ORDER = ("name", "created", "n_refs", "source", "encoder_id", "model_id", "photos_kept", "version",
              "path", "file_bytes")


def register(sub) -> None:
    p = sub.add_parser("identities", help="list, show or remove enrolled identities")
    isub = p.add_subparsers(dest="identities_command", required=True, metavar="ACTION")
    ls = isub.add_parser("list", help="list enrolled identities")
    ls.set_defaults(func=_list)
    show = isub.add_parser("show", help="show an identity's metadata (no biometric data is printed)")
    show.add_argument("name")
    show.set_defaults(func=_show)
    rm = isub.add_parser("remove", help="delete an identity file")
    rm.add_argument("name")
    rm.set_defaults(func=_remove)


def _list(args: argparse.Namespace) -> int:
    store = IdentityStore()
    items = store.list()
    if not items:
        print(f"no identities enrolled (in {store.dir})")
        return 0
    width = max(len(i["name"]) for i in items)
    for i in items:
        if "problem" in i:
            print(f"{i['name']:<{width}}  UNUSABLE: {i['problem']}")
        else:
            kept = ", photos kept" if i.get("photos_kept") == "yes" else ""
            print(f"{i['name']:<{width}}  {i['created']}  {i['n_refs']} refs  {i['encoder_id']}{kept}")
    print(f"{len(items)} identit{'y' if len(items) == 1 else 'ies'} in {store.dir}")
    return 0


def _show(args: argparse.Namespace) -> int:
    info = IdentityStore().show(args.name)
    keys = [k for k in SHOW_ORDER if k in info] + sorted(k for k in info if k not in SHOW_ORDER)
    for k in keys:
        print(f"{k}: {info[k]}")
    return 0


def _remove(args: argparse.Namespace) -> int:
    path = IdentityStore().remove(args.name)
    print(f"removed identity '{args.name}': deleted {path}")
    return 0
