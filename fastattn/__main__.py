"""python -m fastattn ...: the same command line as `fastattn`."""
import sys

from fastattn.cli import main

sys.exit(main())
