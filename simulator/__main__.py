"""Run the simulator with uvicorn: python -m simulator --host 127.0.0.1 --port 8090."""

import argparse
import logging
import os
from collections.abc import Sequence

import uvicorn

from simulator.app import DEFAULT_TOKEN, create_app

logger = logging.getLogger("simulator")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line, with defaults from SIMULATOR_HOST, SIMULATOR_PORT and LOG_LEVEL."""
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
    return parser.parse_args(argv)


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
    uvicorn.run(
        create_app(token=token),
        host=args.host,
        port=args.port,
        log_level=level.lower(),
        access_log=args.access_log,
        timeout_graceful_shutdown=args.graceful_timeout,
    )


if __name__ == "__main__":
    main()
