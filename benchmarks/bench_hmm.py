"""The HMM benchmark alone: a thin wrapper over :mod:`pcdiff.bench.hmm` (``pcdiff bench --only hmm``
runs the same thing as part of the full benchmark).

    python benchmarks/bench_hmm.py [--threads 2] [--device auto] [--quick] [--out docs/benchmarks.md]
"""
from pcdiff.bench.hmm import main

if __name__ == "__main__":
    main()
