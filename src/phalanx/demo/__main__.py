"""`python -m phalanx.demo`: `phalanx demo` with its defaults."""

import argparse
import sys

from phalanx.demo import run

sys.exit(
    run(
        argparse.Namespace(
            scenario="failover", seconds=20.0, clients=4, in_flight=16, seed=1, keep=False
        )
    )
)
