"""`ray job submit --working-dir . -- python jobs/sweep.py --config FILE [key=value ...]` (same as `s1ray sweep`)."""

import sys

from s1ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["sweep", *sys.argv[1:]]))
