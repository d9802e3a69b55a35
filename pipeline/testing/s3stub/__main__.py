"""``python -m pipeline.testing.s3stub``: see :mod:`pipeline.testing.s3stub.cli`."""

import sys

from pipeline.testing.s3stub.cli import main

sys.exit(main())
