"""Sampling + filtering as a Ray job: ray job submit --working-dir . -- python jobs/sample.py --config CONFIG"""

import sys

from _entry import main
from s2d_ray.sampling import format_summary, sample

if __name__ == "__main__":
    sys.exit(main("sample", sample, format_summary))
