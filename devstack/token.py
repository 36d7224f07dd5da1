"""`make token`: a bearer token of the embedded mode, signed with the key under DATA_DIR (or
AUTH_SIGNING_KEY_FILE), the same key the API checks.

    make token                                    # every permission, 12 hours
    make token TOKEN_ARGS="--permissions clients:read,dispatches:read --hours 1 --subject ann"
"""

import argparse
import sys
from datetime import timedelta

from core.auth import ALL_PERMISSIONS, Permission, embedded_tokens
from core.settings import get_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make token", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--permissions",
        default=",".join(sorted(ALL_PERMISSIONS)),
        help="comma-separated, of: " + ", ".join(sorted(ALL_PERMISSIONS)),
    )
    parser.add_argument("--hours", type=float, default=12.0, help="lifetime (default 12)")
    parser.add_argument("--subject", default="operator", help="who it names (the events' actor)")
    args = parser.parse_args(argv)
    settings = get_settings()
    if settings.auth_issuer:
        sys.stderr.write(
            f"AUTH_ISSUER is set: tokens come from {settings.auth_issuer}, not from here.\n"
        )
        return 2
    wanted = {p.strip() for p in args.permissions.split(",") if p.strip()}
    unknown = wanted - {str(p) for p in Permission}
    if unknown or args.hours <= 0:
        problem = f"unknown permissions: {sorted(unknown)}" if unknown else "--hours must be > 0"
        sys.stderr.write(problem + "\n")
        return 2
    token = embedded_tokens(settings).mint(
        subject=args.subject,
        permissions=frozenset(wanted),
        lifetime=timedelta(hours=args.hours),
    )
    sys.stdout.write(token + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
