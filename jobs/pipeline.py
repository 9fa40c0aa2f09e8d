"""`ray job submit --working-dir . -- python jobs/pipeline.py --config FILE [key=value ...]` (same as `s1ray pipeline`)."""

import sys

from s1ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["pipeline", *sys.argv[1:]]))
