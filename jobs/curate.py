"""Entrypoint for `ray job submit -- python jobs/curate.py --config jobs/configs/curate_shared_pool.yaml`."""

import sys

from s1ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["curate", *sys.argv[1:]]))
