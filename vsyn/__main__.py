import sys

from vsyn.cli import main

sys.exit(main())
