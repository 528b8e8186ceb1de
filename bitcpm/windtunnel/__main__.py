"""`python -m bitcpm.windtunnel {coordcheck,search,report,transfer,ladder,predict} ...`."""

import sys

from bitcpm.windtunnel.cli import main

sys.exit(main())
