"""The longer form of issue 16's property tests: replay and the stream find
the same findings from random days with out-of-order and late data.

    python -m bench.late_data                     # 20 broker runs, 1,000 replay-only days
    python -m bench.late_data --examples 5 --replay-examples 200

The suite runs the same tests with 2 broker runs and 60 replay-only days
(tests/integration/test_late_data_stream.py, tests/test_partition_clock.py).
It uses the broker on SEPWATCH_BENCH_KAFKA_PORT (19192), started and
stopped by the tests' fixture if none runs there.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

TESTS = (
    "tests/test_partition_clock.py::test_any_reading_order_of_the_partitions_finds_what_replay_finds",
    "tests/integration/test_late_data_stream.py",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=20, help="broker runs of five days")
    parser.add_argument("--replay-examples", type=int, default=1000, help="replay-only days")
    args = parser.parse_args(argv)
    env = {
        **os.environ,
        "SEPWATCH_LATE_DATA_EXAMPLES": str(args.examples),
        "SEPWATCH_LATE_DATA_REPLAY_EXAMPLES": str(args.replay_examples),
        "SEPWATCH_TEST_KAFKA_PORT": os.environ.get("SEPWATCH_BENCH_KAFKA_PORT", "19192"),
    }
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", *TESTS]
    return subprocess.run(command, env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
