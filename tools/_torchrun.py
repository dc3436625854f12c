#!/usr/bin/env python
"""torchrun as tools/dist_{train,test}.sh start it (tools/_launch.sh): torchrun's arguments,
the same launch; a failed rank ends it with one line and the rank's exit status instead of
torchrun's traceback and status 1 (mixedae/suite/torchrun.py)."""
import sys

from mixedae.suite.torchrun import launch

if __name__ == '__main__':
    sys.exit(launch(sys.argv[1:]))
