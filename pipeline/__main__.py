"""``python -m pipeline``: the end-to-end job (see pipeline/run.py)."""
import sys

from pipeline.run import main

if __name__ == "__main__":
    sys.exit(main())
