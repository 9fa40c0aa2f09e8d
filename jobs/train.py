"""`ray job submit --working-dir . -- python jobs/train.py --config FILE [key=value ...]` (same as `s1ray train`)."""

import sys

from s1ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
