"""`ray job submit --working-dir . -- python jobs/select_subset.py --config FILE [key=value ...]` (= `s1ray select`).

Not ``jobs/select.py``: the script's folder comes first on sys.path, and a ``select.py`` there
would shadow the standard library's ``select`` module.
"""

import sys

from s1ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["select", *sys.argv[1:]]))
