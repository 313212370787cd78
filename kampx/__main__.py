import sys

from kampx.cli.kampx import main

sys.exit(main())
