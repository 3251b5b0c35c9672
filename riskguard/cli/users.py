"""``riskguard users add NAME --role ROLE --file F``: give a person a token.

A random token is made, printed once on stdout, and only its SHA-256 is stored in
the users file (created with permissions 0600). A running riskguard picks the change
up by itself (the file is watched) or on SIGHUP.
"""

from __future__ import annotations

import argparse
import sys

from riskguard.cli.common import EXIT_CODES_HELP, EXIT_OK, EXIT_USAGE
from riskguard.control.users import ROLES, UsersError, add, read


def cmd_users_add(args: argparse.Namespace) -> int:
    """Add one person; print their token once."""
    try:
        token = add(args.file, args.name, args.role)
    except UsersError as exc:
        for problem in exc.problems:
            print(f"riskguard users add: {problem}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"riskguard users add: cannot write {args.file}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    print(token)
    print(
        f"added {args.name} ({args.role}) to {args.file}; the line above is their token, "
        "shown only this once: hand it over privately (only its SHA-256 is stored)",
        file=sys.stderr,
    )
    return EXIT_OK


def cmd_users_list(args: argparse.Namespace) -> int:
    """Print the people in a users file, one per line: name and role (never a hash)."""
    try:
        users, _ = read(args.file)
    except UsersError as exc:
        for problem in exc.problems:
            print(f"riskguard users list: {problem}", file=sys.stderr)
        return EXIT_USAGE
    for user in users:
        print(f"{user.name:<24} {user.role}")
    return EXIT_OK


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``users add`` and ``users list``."""
    u = sub.add_parser(
        "users",
        help="people allowed to use the API and the console, and their roles",
        description="Manage the users file ([http] users_file): one entry per person with "
        "a role (viewer: read; operator: also halt; risk-admin: also resume and approve) "
        "and the SHA-256 of their token. A running riskguard reloads it on change.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = u.add_subparsers(dest="users_command", required=True, metavar="{add,list}")
    a = what.add_parser(
        "add",
        help="add a person: prints a new token once, stores only its hash",
        description="Add a person with a role. A random token is printed once on stdout; "
        "only its SHA-256 goes into the file, which is created with permissions 0600.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    a.add_argument("name", help="the person's name as the audit log will show it, e.g. alice")
    a.add_argument("--role", required=True, choices=ROLES, help="what they may do")
    a.add_argument(
        "--file",
        required=True,
        metavar="PATH",
        help="path of the users file (TOML; .json for JSON), created when missing",
    )
    a.set_defaults(func=cmd_users_add)
    ls = what.add_parser(
        "list",
        help="list the people in a users file and their roles",
        description="Print each person's name and role (never a token or hash).",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ls.add_argument("--file", required=True, metavar="PATH", help="path of the users file")
    ls.set_defaults(func=cmd_users_list)
