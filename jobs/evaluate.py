"""`ray job submit --working-dir . -- python jobs/evaluate.py --config FILE [key=value ...]` (same as `s1ray evaluate`)."""

import sys

from s1ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
