import sys

from mainspring.cli import main

sys.exit(main())
