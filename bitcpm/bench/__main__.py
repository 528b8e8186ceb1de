"""`python -m bitcpm.bench`: see bitcpm.bench.cli."""

from bitcpm.bench.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
