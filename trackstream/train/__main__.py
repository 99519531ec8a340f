"""``python -m trackstream.train`` moved: the training application is ``python -m trackstream.stages``."""

import sys

if __name__ == "__main__":
    sys.exit(
        "python -m trackstream.train is the training engine, not a command: run "
        "`python -m trackstream.stages " + " ".join(sys.argv[1:]) + "` (or `trackstream train ...`)"
    )
