import sys

from tl_helpers.cli import main

sys.exit(main())
