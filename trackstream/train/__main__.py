"""``python -m trackstream.train experiment=NAME key=value ...`` (see trackstream/train/app.py)."""

from trackstream.train.app import main

if __name__ == "__main__":
    main()
