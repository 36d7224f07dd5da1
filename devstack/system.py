"""System packages the tests need (`make test` runs this first): installed with apt-get when
missing and root, else a clear failure saying how. Never a skipped test.

    python -m devstack.system chromium chromium-driver prometheus kubernetes-client
"""

import os
import shutil
import subprocess
import sys

# Debian package: the command it provides.
PACKAGES = {
    "chromium": "chromium",
    "chromium-driver": "chromedriver",
    "prometheus": "promtool",
    # kubectl, for `kubectl kustomize` of the deployment manifests.
    "kubernetes-client": "kubectl",
    # Node.js runs the reference implementations of tests (devstack.npm installs them).
    "nodejs": "node",
    "npm": "npm",
}


def ensure(packages: list[str]) -> int:
    missing = [name for name in packages if shutil.which(PACKAGES[name]) is None]
    if not missing:
        return 0
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        sys.stderr.write(
            f"the tests need {', '.join(missing)}: install them (Debian: "
            f"sudo apt-get install -y {' '.join(missing)}) and run make test again\n"
        )
        return 1
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", *missing],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    return 0


if __name__ == "__main__":
    sys.exit(ensure(sys.argv[1:] or list(PACKAGES)))
