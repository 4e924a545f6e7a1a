"""Evaluation as a Ray job: ray job submit --working-dir . -- python jobs/eval.py --config CONFIG"""

import sys

from _entry import main
from s2d_ray.evaluation import evaluate, format_report

if __name__ == "__main__":
    sys.exit(main("eval", evaluate, format_report))
