"""`make soak` (python -m soak): the service under fire for SOAK_MINUTES (default 10).

The stack is the bench's own, in a temporary data directory, with three worker processes; the
gateway answers in 100-200 ms and each worker sends at most 10 at a time, so that the 100,000
messages take the whole run rather than its first minute, and a kill leaves at most 10 sends
half-done. WORKER_SHUTDOWN_SECONDS is 10 (a SIGTERM'd worker exits within it) and
SEND_RETRY_MAX_SECONDS 15 (a message retried through a minute's outage goes within 15 s of
its end, not five minutes later). A table goes to stdout, JSON to soak/results/; the exit code
is 1 when a check fails.
"""

import argparse
import asyncio
import dataclasses
import logging
import os
import random
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from bench.memory import PeakRss
from core.logging import configure_logging
from core.settings import PROJECT_ROOT
from soak.plan import DEFAULT_PROFILE, SHORT_PROFILE
from soak.report import soak_table
from soak.run import SERVICE_ENV, SoakResult, run_soak, write_json
from soak.stack import SoakStack

log = logging.getLogger("soak")

RESULTS_DIR = PROJECT_ROOT / "soak" / "results"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m soak", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--minutes",
        type=float,
        default=float(os.environ.get("SOAK_MINUTES", DEFAULT_PROFILE.minutes)),
        help="how long the faults and the load go on (SOAK_MINUTES; default 10)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=int(os.environ["SOAK_SEED"]) if os.environ.get("SOAK_SEED") else None,
        help="the seed of the plan, the faults and the gateway (SOAK_SEED; default: drawn)",
    )
    parser.add_argument("--clients", type=int, default=DEFAULT_PROFILE.clients)
    parser.add_argument(
        "--short",
        action="store_true",
        help="the test suite's profile: 5,000 clients, two faults of each kind, 2 minutes",
    )
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--keep-data", action="store_true", help="keep the data directory and logs")
    return parser.parse_args(argv)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(level="INFO")
    for noisy in ("temporalio", "pgserver", "alembic", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    signal.signal(signal.SIGTERM, _interrupt)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1_000_000)
    if args.short:
        profile = SHORT_PROFILE
    else:
        profile = dataclasses.replace(DEFAULT_PROFILE, minutes=args.minutes, clients=args.clients)
    log.info("soak: seed %d, %g minutes, %d clients", seed, profile.minutes, profile.clients)
    data_dir = Path(tempfile.mkdtemp(prefix="mailing-soak-"))
    memory = PeakRss()
    memory.start()
    stack = SoakStack(
        data_dir=data_dir,
        send_concurrency=profile.send_concurrency,
        extra_env=SERVICE_ENV,
        memory=memory,
        workers=profile.workers,
    )
    result = SoakResult(seed=seed, profile=dataclasses.asdict(profile))
    try:
        stack.start()
        result = asyncio.run(run_soak(stack, memory, profile, seed))
    except KeyboardInterrupt:
        log.warning("interrupted: stopping the stack")
        result.errors.append("interrupted")
    except (RuntimeError, TimeoutError, OSError) as error:
        log.exception("soak failed")
        result.errors.append(f"soak failed: {error!r}")
    finally:
        stack.stop()
        memory.stop()
        if args.keep_data:
            log.info("data and logs kept in %s", data_dir)
        else:
            shutil.rmtree(data_dir, ignore_errors=True)
    path = write_json(result, args.results_dir)
    log.info("wrote %s", path)
    command = f"SOAK_MINUTES={profile.minutes:g} SOAK_SEED={seed} make soak"
    if args.short:
        command = f"python -m soak --short --seed {seed}"
    sys.stdout.write(soak_table(result, command) + "\n")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
