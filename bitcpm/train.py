"""`python -m bitcpm.train key=value ...`: compose -> validate -> plan -> launch (a Hydra app).

This front end never imports torch or megatron: it composes and checks the config, prints the plan,
writes the run directory and hands the job to a launcher, which starts `bitcpm.worker` on every rank.
`-m` runs a study through bitcpm's Hydra Launcher plugin: every member is planned before the first starts.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m bitcpm.train` and the `bitcpm-train` script."""
    from bitcpm.frontend.app import run

    return run(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
