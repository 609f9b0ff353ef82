"""The HMM benchmark alone: a thin wrapper over :mod:`benchmarks.hmm` (``pcdiff bench --only hmm``
runs the same thing as part of the full benchmark).

    python benchmarks/bench_hmm.py [--threads 2] [--device auto] [--quick] [--out docs/benchmarks.md]
"""
import pathlib
import sys

if __name__ == "__main__":
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))     # the checkout: `benchmarks`
    from benchmarks.hmm import main
    main()
