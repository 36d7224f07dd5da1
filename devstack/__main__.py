"""`python -m devstack` (`make run`): the whole service on the embedded stack."""

import sys

from devstack.stack import main

sys.exit(main())
