"""The whole loop as a Ray job:
    ray job submit --working-dir . -- python jobs/distill.py --config configs/smoke.yaml
"""

import sys

from _entry import main
from s2d_ray.pipeline import run

if __name__ == "__main__":
    sys.exit(main("distill", run, lambda report: f"s2d job distill: done, report in {report['output_dir']}"))
