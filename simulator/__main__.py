"""Run the simulator with uvicorn: python -m simulator --host 127.0.0.1 --port 8090."""

import argparse
import json
import logging
import os
from collections.abc import Sequence

import uvicorn

from simulator.app import DEFAULT_TOKEN, create_app
from simulator.gateways import GatewayNameError, check_gateway_name

logger = logging.getLogger("simulator")


def _gateway_token(value: str) -> tuple[str, str]:
    name, sep, token = value.partition("=")
    if not sep or not token:
        raise argparse.ArgumentTypeError("expected NAME=TOKEN")
    try:
        return check_gateway_name(name), token
    except GatewayNameError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _gateway_tokens(
    parser: argparse.ArgumentParser, given: list[tuple[str, str]]
) -> dict[str, str]:
    """SIMULATOR_GATEWAY_TOKENS (a JSON object of name to token), overridden by the options."""
    try:
        loaded = json.loads(os.environ.get("SIMULATOR_GATEWAY_TOKENS", "").strip() or "{}")
    except ValueError:
        loaded = None
    if not isinstance(loaded, dict) or not all(isinstance(t, str) for t in loaded.values()):
        parser.error("SIMULATOR_GATEWAY_TOKENS must be a JSON object of gateway name to token")
    try:
        from_env = [_gateway_token(f"{name}={token}") for name, token in loaded.items()]
    except argparse.ArgumentTypeError as exc:
        parser.error(f"SIMULATOR_GATEWAY_TOKENS: {exc}")
    return dict(from_env) | dict(given)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line; SIMULATOR_HOST, SIMULATOR_PORT, LOG_LEVEL and the others give defaults."""
    parser = argparse.ArgumentParser(
        prog="python -m simulator", description="Simulator of the external SMS-sending API."
    )
    parser.add_argument("--host", default=os.environ.get("SIMULATOR_HOST", "127.0.0.1"))
    # argparse applies `type` to a string default too, so a bad SIMULATOR_PORT is a usage error.
    parser.add_argument("--port", type=int, default=os.environ.get("SIMULATOR_PORT", "8090"))
    parser.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "INFO"))
    parser.add_argument(
        "--access-log",
        action="store_true",
        help="log every request (off by default: it costs throughput in benchmarks)",
    )
    parser.add_argument(
        "--graceful-timeout",
        type=float,
        default=5.0,
        help="seconds to wait for requests in flight on shutdown (hanging outages never end)",
    )
    parser.add_argument(
        "--gateway-token",
        metavar="NAME=TOKEN",
        type=_gateway_token,
        action="append",
        default=[],
        help="the token of gateway NAME (repeatable); other gateways take SEND_API_TOKEN. "
        "SIMULATOR_GATEWAY_TOKENS keeps tokens out of the process list",
    )
    args = parser.parse_args(argv)
    args.gateway_tokens = _gateway_tokens(parser, args.gateway_token)
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """Run the simulator until interrupted; the token is SEND_API_TOKEN."""
    args = parse_args(argv)
    level = args.log_level.upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    token = os.environ.get("SEND_API_TOKEN", DEFAULT_TOKEN)
    logger.info(
        "starting the SMS API simulator on http://%s:%d/v1 (%s token)",
        args.host,
        args.port,
        "default" if token == DEFAULT_TOKEN else "SEND_API_TOKEN",
    )
    if args.gateway_tokens:
        logger.info("gateways with tokens of their own: %s", ", ".join(sorted(args.gateway_tokens)))
    uvicorn.run(
        create_app(token=token, gateway_tokens=args.gateway_tokens),
        host=args.host,
        port=args.port,
        log_level=level.lower(),
        access_log=args.access_log,
        timeout_graceful_shutdown=args.graceful_timeout,
    )


if __name__ == "__main__":
    main()
