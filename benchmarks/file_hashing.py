"""What checking files costs: stilts' sha256 of a file (`stilts.io.sha256_file`, which checkpoints, resume states
and feature caches record and check) against writing the same bytes (the save itself), on this machine.

    python benchmarks/file_hashing.py [--mib 512] [--repeats 3]

Writes --mib MiB of random bytes to a file in a temporary folder (flushed to disk: fsync), then hashes it (from
the page cache, as right after a save); medians of --repeats. Prints the machine and both rates; last line:
hash_gb_s=<GB/s> write_gb_s=<GB/s> hash_over_write=<time ratio>. The folder is removed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import bench_env

from stilts.io import sha256_file


def write(path: Path, data: bytes) -> float:
    start = time.perf_counter()
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return time.perf_counter() - start


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mib", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    data = os.urandom(args.mib << 20)
    writes, hashes = [], []
    with tempfile.TemporaryDirectory(prefix="stilts-file-hashing-") as folder:
        path = Path(folder) / "state.bin"
        for _ in range(args.repeats):
            writes.append(write(path, data))
            start = time.perf_counter()
            sha256_file(path)
            hashes.append(time.perf_counter() - start)
    w, h = statistics.median(writes), statistics.median(hashes)
    gb = len(data) / 1e9
    print(bench_env.describe_cpu())
    print(f"{args.mib} MiB: write + fsync {w:.2f} s ({gb / w:.2f} GB/s), sha256 {h:.2f} s ({gb / h:.2f} GB/s); "
          f"medians of {args.repeats}")
    print(f"hash_gb_s={gb / h:.4f} write_gb_s={gb / w:.4f} hash_over_write={h / w:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
