"""``python -m trackstream.stages experiment=NAME key=value ...`` (see trackstream/stages/app.py)."""

from trackstream.stages.app import main

if __name__ == "__main__":
    main()
