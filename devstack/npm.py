"""npm packages the tests run with Node, such as a reference implementation to check our code
against: each installed once, at a pinned version, under `.data/npm/` (git-ignored), so that
nothing in the tracked tree is written and no lock file records a registry's addresses."""

import fcntl
import shutil
import subprocess
from pathlib import Path

from core.settings import PROJECT_ROOT

NPM_DIR = PROJECT_ROOT / ".data" / "npm"


def ensure_npm_package(name: str, version: str) -> Path:
    """The `node_modules` folder holding `name@version` and its dependencies, installed there
    first if it is not yet. Concurrent test processes wait for each other's install."""
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if missing:
        raise RuntimeError(
            f"{' and '.join(missing)} not found: the tests run {name}@{version} with Node.js; "
            "install it (Debian: apt-get install -y nodejs npm, or python -m devstack.system "
            "nodejs npm as root)"
        )
    prefix = NPM_DIR / f"{name.replace('/', '+')}-{version}"
    # Written only once npm has finished: a folder without it is an install cut short.
    done = prefix / ".installed"
    NPM_DIR.mkdir(parents=True, exist_ok=True)
    with (NPM_DIR / "install.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(prefix, ignore_errors=True)
            prefix.mkdir()
            _npm_install(f"{name}@{version}", prefix=prefix)
            done.touch()
    return prefix / "node_modules"


def _npm_install(spec: str, *, prefix: Path) -> None:
    # --no-save and --no-package-lock: no package.json or package-lock.json anywhere, only
    # node_modules/ (with npm's own hidden .package-lock.json inside it).
    command = ["npm", "install", "--no-save", "--no-package-lock", "--no-audit", "--no-fund"]
    command += ["--no-update-notifier", "--loglevel=error", "--prefix", str(prefix), spec]
    result = subprocess.run(command, cwd=prefix, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"npm install {spec} failed ({result.returncode}):\n{result.stderr}")
