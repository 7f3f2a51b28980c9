# SPDX-License-Identifier: GPL-2.0-only
"""How long a config with thousands of unknown keys takes to be refused, against ten times fewer in the same run.

Run: .venv/bin/python tests/bench/config_unknown_keys.py [--keys 4000] [--repeat 3]

A `[monitor]` table of KEYS unknown keys, then of ten times as many; each is
loaded (and refused, one problem per key) --repeat times. Printed: the median
seconds of each, microseconds per key, and the ratio of the two medians.
Linear, the ratio is about 10 (quadratic merging made it 100: 28 s for 40,000
keys); tests/unit/config/test_config_limits.py counts the same work in lines run.
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from crashhpd import config
from crashhpd.errors import ConfigError


def seconds(path: Path, keys: int) -> float:
    started = time.perf_counter()
    try:
        config.load(str(path))
    except ConfigError as err:
        assert len(err.problems) == keys, len(err.problems)
    else:
        raise AssertionError("a config of unknown keys was accepted")
    return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", type=int, default=4000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    medians = {}
    with tempfile.TemporaryDirectory() as work:
        for keys in (args.keys, 10 * args.keys):
            path = Path(work) / f"{keys}.toml"
            path.write_text("[monitor]\n" + "".join(f"k{i} = 1\n" for i in range(keys)))
            medians[keys] = statistics.median(seconds(path, keys) for _ in range(args.repeat))
            print(f"{keys:>7} unknown keys: {medians[keys]:8.3f} s  {medians[keys] / keys * 1e6:6.1f} us/key")
    small, large = medians.values()
    print(f"ratio for ten times the keys: {large / small:.1f} (linear: about 10)")


if __name__ == "__main__":
    main()
