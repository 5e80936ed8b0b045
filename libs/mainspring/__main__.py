import sys

from mainspring.apps.cli import main

sys.exit(main())
