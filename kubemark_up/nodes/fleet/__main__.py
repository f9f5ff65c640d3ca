import sys

from kubemark_up.nodes.fleet.process import main

sys.exit(main(sys.argv[1:]))
