"""``python -m trackstream.pipeline``: the end-to-end job (see trackstream/pipeline/run.py)."""

import sys

from trackstream.pipeline.run import main

if __name__ == "__main__":
    sys.exit(main())
